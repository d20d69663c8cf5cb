"""The registry-wide lock on a registered model's aliases (`@champion`, `@challenger`).

It is a registered model, `<name>.champion-lock`, in the same registry. A file lock would serve
one machine; the registry is what every client shares, a local SQLite
file or a remote `mlflow server` alike. Creating a registered model is atomic there: the
`registered_models` table has the primary key (workspace, name)
(`mlflow/store/model_registry/dbmodels/models.py`, `SqlRegisteredModel.__table_args__`), and
`SqlAlchemyStore.create_registered_model` turns the database's `IntegrityError` into an
`MlflowException` with error_code RESOURCE_ALREADY_EXISTS
(`mlflow/store/model_registry/sqlalchemy_store.py`, via `prompt/registry_utils.py:
handle_resource_already_exist_error`). Behind `mlflow server` the handler
(`server/handlers.py: _create_registered_model`) calls the same store, and the error comes back
as HTTP 400 with that error_code, which the client raises as a `RestException` carrying it.
So "create succeeded" means "this process holds the lock", for every client. Release deletes
the model. The lock's tags say who holds it (`owner`, `by`: user@host and pid, a `token` unique
to this acquisition) and since when (`acquired_at`, `expires_at`); its description says what it
is, for whoever meets it in the MLflow UI.

Waiting: a taken lock is polled with jittered exponential backoff (25 ms doubling to 1 s, each
wait scaled by a random 0.5-1.5) until `wait_s`, then a one-line `UserError` names the holder
and since when. Two more answers of the create are handled: RESOURCE_DOES_NOT_EXIST (the store
found the name taken, then the holder released it before the store could read it back: retry at
once), and "it exists and carries our own token" (MLflow's HTTP client retries POSTs on 5xx
(`utils/request_utils.py`: `allowed_methods=None`), so a create that committed but whose
answer was lost comes back as RESOURCE_ALREADY_EXISTS: we hold it).

Transient errors: on SQLite, writers from several processes queue on the database lock for
MLflow's `PRAGMA busy_timeout = 20000` (`store/db/utils.py`); a writer that still fails gets
`OperationalError`, which MLflow reports as TEMPORARILY_UNAVAILABLE (HTTP 503, which its HTTP
client already retries with backoff). The lock's own calls retry that code a few more times.

`move_champion` compares before it takes the lock and again each time it finds the lock taken:
a read that shows another holder is as good an answer as one under the lock (at that moment the
expectation was stale), so the losers of a race fail fast instead of queueing for the lock only
to be told the same. The compare that decides a move is the one under the lock.

Stale locks: a process killed under the lock leaves it behind. A lock older than `stale_s`
(by its `acquired_at`, on the acquirer's clock: skew between machines must stay well under
`stale_s`; the default 600 s is 100 times what the work under the lock takes) is broken, and
breaking is itself serialized, since several waiters see the same stale lock at once: a breaker
first takes `<name>.champion-lock.break` (the same atomic create), re-reads the lock, deletes it
only if it still carries the stale token, and deletes the break lock. So a waiter that saw the
stale lock cannot delete the fresh lock another waiter took meanwhile. (A break lock left by a
breaker killed in its two calls is deleted after 60 s.) Release likewise deletes the lock only
while it carries our token. Reentrant within a thread: a holder calling `move_champion` does
not wait for itself.

MLflow is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import getpass
import logging
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

from resnet_mlops.errors import UserError
from resnet_mlops.registry.store import first_line

LOCK_SUFFIX = ".champion-lock"
BREAK_SUFFIX = ".break"
MAX_OWNER = 300  # characters of the owner a lock names
BREAK_STALE_S = 60.0  # a break lock older than this was left by a breaker that died
_FIRST_DELAY_S, _MAX_DELAY_S = 0.025, 1.0
_TRANSIENT = ("TEMPORARILY_UNAVAILABLE",)
_TRANSIENT_TRIES = 5

_log = logging.getLogger(__name__)
_held = threading.local()  # (registry URI, model name) -> how many times this thread holds the lock



@dataclass(frozen=True)
class _Holder:
    owner: str
    by: str
    token: str
    acquired_at: datetime

    def age_s(self) -> float:
        return (datetime.now(timezone.utc) - self.acquired_at).total_seconds()

    def since(self) -> str:
        return utc_iso(self.acquired_at)


@contextmanager
def champion_lock(client, name: str, owner: str, wait_s: float = 120, stale_s: float = 600) -> Iterator[None]:
    """Hold the registry-wide lock on the aliases of model `name` for the block.

    Waits up to `wait_s` for another holder (then a one-line `UserError` naming it); breaks a
    lock older than `stale_s`. `owner` says who holds it (shown to whoever waits).
    """
    with locked(client, name, owner, wait_s, stale_s):
        yield


@contextmanager
def locked(client, name: str, owner: str, wait_s: float = 120, stale_s: float = 600,
            while_waiting=None) -> Iterator[None]:
    """`champion_lock`; `while_waiting()` is called each time the lock is found taken, and may
    raise to stop waiting (`move_champion`: the champion already moved, so the lock is not needed)."""
    key = (str(getattr(client, "_registry_uri", "") or id(client)), name)
    counts = _held.__dict__.setdefault("counts", {})
    if counts.get(key):
        counts[key] += 1
        try:
            yield
        finally:
            counts[key] -= 1
        return
    lock = name + LOCK_SUFFIX
    token = _acquire(client, lock, name, owner, wait_s, stale_s, while_waiting)
    counts[key] = 1
    try:
        yield
    finally:
        counts.pop(key, None)
        _release(client, lock, token)


def _acquire(client, lock: str, name: str, owner: str, wait_s: float, stale_s: float, while_waiting=None) -> str:
    from mlflow.exceptions import MlflowException

    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    delay = _FIRST_DELAY_S
    while True:
        now = datetime.now(timezone.utc)
        tags = {"owner": one_line(owner, MAX_OWNER), "by": f"{user_at_host()} pid {os.getpid()}", "token": token,
                "acquired_at": utc_iso(now), "expires_at": utc_iso(now + timedelta(seconds=stale_s))}
        try:
            _transient_retry(lambda: client.create_registered_model(lock, tags=tags, description=(
                f"Lock on the aliases (@champion, @challenger) of '{name}', held by {tags['owner']} "
                f"({tags['by']}) since {tags['acquired_at']}. resnet-mlops creates and deletes it "
                f"(resnet_mlops.registry.lock); delete it only if that process is gone.")))
            return token
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise registry_error(client, f"the lock on @champion of '{name}' could not be taken",
                                      error) from None
            # RESOURCE_DOES_NOT_EXIST: the store found the name taken, then the holder released it
            # before the store could read it back; the read below says the same, and we try again.
        holder = _read_lock(client, lock)
        if holder is not None and holder.token == token:
            return token  # our create committed, its answer was lost and the retry found it
        if holder is not None and holder.age_s() > stale_s and _break(client, lock, holder):
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            if holder is None:
                raise UserError(f"the lock on @champion of '{name}' ('{lock}') could not be taken within "
                                f"{wait_s:g} s: it was released and taken again each time (retry later)")
            raise UserError(f"@champion of '{name}' is locked by {holder.owner} ({holder.by}) since "
                            f"{holder.since()}; it was not released within {wait_s:g} s (retry later; if that "
                            f"process is gone, the lock is broken after {stale_s:g} s, or delete the registered "
                            f"model '{lock}')")
        if holder is None:
            continue  # released between our create and our read: try again at once
        if while_waiting is not None:
            while_waiting()
        time.sleep(min(delay * random.uniform(0.5, 1.5), left))
        delay = min(delay * 2, _MAX_DELAY_S)


def _break(client, lock: str, stale: _Holder) -> bool:
    """Delete the stale lock `stale`, under the break lock; whether the lock is gone now."""
    from mlflow.exceptions import MlflowException

    breaker = lock + BREAK_SUFFIX
    try:
        _transient_retry(lambda: client.create_registered_model(breaker, tags={
            "token": uuid.uuid4().hex, "by": f"{user_at_host()} pid {os.getpid()}",
            "acquired_at": utc_iso(datetime.now(timezone.utc))},
            description=f"Breaking the stale lock '{lock}'; resnet-mlops deletes this within seconds."))
    except MlflowException as error:
        if error.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            other = _read_lock(client, breaker)
            if other is not None and other.age_s() > BREAK_STALE_S:
                _delete_if(client, breaker, other.token)
            return False
        raise registry_error(client, f"the stale lock '{lock}' could not be broken", error) from None
    try:
        again = _read_lock(client, lock)
        if again is None:
            return True
        if again.token != stale.token:
            return False  # another waiter broke it and took the lock meanwhile: not ours to delete
        _delete(client, lock)
        _log.warning("broke the stale lock '%s' of %s (%s), held since %s", lock, stale.owner, stale.by,
                     stale.since())
        return True
    finally:
        _delete(client, breaker)


def _release(client, lock: str, token: str) -> None:
    try:
        if not _delete_if(client, lock, token):
            _log.warning("the lock '%s' was no longer ours when released (broken as stale while held)", lock)
    except Exception as error:  # noqa: BLE001 - never mask the block's own outcome; the lock goes stale
        _log.warning("the lock '%s' could not be released (%s); it is broken when stale", lock, first_line(error))


def _delete_if(client, lock: str, token: str) -> bool:
    """Delete `lock` while it carries `token`; whether it did."""
    held = _read_lock(client, lock)
    if held is None or held.token != token:
        return False
    _delete(client, lock)
    return True


def _delete(client, lock: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        _transient_retry(lambda: client.delete_registered_model(lock))
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _read_lock(client, lock: str) -> _Holder | None:
    from mlflow.exceptions import MlflowException

    try:
        model = _transient_retry(lambda: client.get_registered_model(lock))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise registry_error(client, f"the lock '{lock}' could not be read", error) from None
    tags = model.tags
    created = datetime.fromtimestamp((model.creation_timestamp or 0) / 1000, timezone.utc)
    try:
        acquired = datetime.fromisoformat(tags["acquired_at"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        acquired = created
    return _Holder(tags.get("owner", "an unknown owner"), tags.get("by", "unknown"), tags.get("token", ""), acquired)


def _transient_retry(call):
    from mlflow.exceptions import MlflowException

    for attempt in range(_TRANSIENT_TRIES):
        try:
            return call()
        except MlflowException as error:
            if error.error_code not in _TRANSIENT or attempt == _TRANSIENT_TRIES - 1:
                raise
            time.sleep(_FIRST_DELAY_S * 2 ** attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def user_at_host() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())  # one line
    return text if len(text) <= limit else text[:limit - 3] + "..."


def registry_uri(client) -> str:
    return str(getattr(client, "_registry_uri", None) or "this registry")


def registry_error(client, what: str, error: Exception) -> UserError:
    return UserError(f"{what}: the model registry at {registry_uri(client)} answered {first_line(error)}")
