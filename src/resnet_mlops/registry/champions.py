"""Who holds `@champion`, since when and why: alias moves under a registry-wide lock, and their history.

MLflow keeps no history of an alias (setting it overwrites the row) and an alias move is
last-writer-wins, so two `register` processes that each compared their version with champion
v1 could both move `@champion`, the later silently undoing the earlier. Here every move of
`@champion` (and of `@challenger`) happens under a lock that all clients of one registry see,
as a compare-and-set: `move_champion(..., expected=v1)` moves the alias only while v1 still
holds it, else raises `ChampionChanged`, and it appends one entry to the champion history.

The lock is `registry/lock.py`'s.

The history is one registered-model tag per move, on the model itself
---------------------------------------------------------------------
Key `champion.history.000001`, ... (the sequence, per registered model), value JSON: version,
previous, at, reason, by, source. Tags are stored in the registry, so every client sees them,
and they survive deleting versions (version tags would not, and would scatter the history);
one tag per move, written once under the lock, cannot lose a concurrent entry the way a
read-modify-write of one JSON list could, and a list would soon exceed the column. The limit:
`_validate_registered_model_tag` accepts 100,000 characters (`utils/validation.py:
MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH`), but the column is `String(5000)`
(`SqlRegisteredModelTag.value`; never widened by a migration, unlike version tags), which
PostgreSQL and MySQL enforce. Reason and source are clipped (1000 and 300 characters) so an
entry stays under 2,000. The sequence is the largest existing key + 1, computed under the lock.

Order of writes: the alias, then the history entry; if the entry cannot be written the alias is
put back (or removed), so the history never misses a move this module made. `previous` is read
from the alias itself, not from the history, so a move made outside this module (the MLflow UI,
another tool) shows as a break in the chain, which `format_history` prints as a holder of unknown
start. A champion set before any history existed (older registries) is such a holder too.

MLflow is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from resnet_mlops.errors import UserError
from resnet_mlops.project import CHAMPION
from resnet_mlops.registry.store import first_line
from resnet_mlops.registry.lock import (champion_lock, locked, one_line, registry_error, registry_uri, user_at_host,
                                        utc_iso)

CHALLENGER = "challenger"
HISTORY_PREFIX = "champion.history."
MAX_REASON = 1000  # characters of a history entry's reason; the whole entry stays under 2,000
MAX_SOURCE = 300

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    """One entry of the champion history: `version` took `@champion` from `previous`."""

    sequence: int  # 1, 2, ... per registered model
    version: int  # the version that took @champion
    previous: int | None  # who held it before (None: nobody)
    at: str  # ISO-8601 UTC, seconds
    reason: str  # one sentence
    by: str  # user@host
    source: str  # e.g. "register (run <run_id>)", "rollback", "register --force"


class ChampionChanged(UserError):
    """`@champion` is no longer held by the version the caller compared against.

    A `UserError`, so that one reaching the CLI is one line; callers that can re-decide catch it.
    """

    def __init__(self, current: int | None, expected: int | None = None, name: str = ""):
        self.current = current
        self.expected = expected
        self.name = name
        super().__init__(f"@champion of '{name}' is held by {_version_text(current)}, not by "
                         f"{_version_text(expected)} as compared against: it moved meanwhile; nothing was changed")


# -- moves and the history ----------------------------------------------------------------------

def move_champion(client, name: str, version: int, reason: str, source: str, expected: int | None) -> Move:
    """Under `champion_lock`: if @champion is not held by `expected` (None: nobody), raise
    `ChampionChanged(current)`; else set @champion to `version` and append the history entry;
    return it."""
    from mlflow.exceptions import MlflowException

    expected = None if expected is None else int(expected)

    def compare():  # a read that differs is as good an answer as one under the lock: fail fast
        current = _alias_version(_registered_model(client, name), CHAMPION)
        if current != expected:
            raise ChampionChanged(current, expected, name)

    compare()
    with locked(client, name, owner=source, while_waiting=compare):
        model = _registered_model(client, name)
        current = _alias_version(model, CHAMPION)
        if current != expected:
            raise ChampionChanged(current, expected, name)
        move = Move(sequence=_last_sequence(model.tags) + 1, version=int(version), previous=current,
                    at=utc_iso(datetime.now(timezone.utc)), reason=one_line(reason, MAX_REASON), by=user_at_host(),
                    source=one_line(source, MAX_SOURCE))
        try:
            client.set_registered_model_alias(name, CHAMPION, str(move.version))
        except MlflowException as error:
            raise registry_error(client, f"@champion of '{name}' could not be moved to v{move.version}",
                                  error) from None
        try:
            client.set_registered_model_tag(name, _history_key(move.sequence), _encode(move))
        except Exception as error:
            _put_back(client, name, current)
            if isinstance(error, MlflowException):
                raise registry_error(client, f"the champion history of '{name}' could not be written, so "
                                              f"@champion stays with {_version_text(current)}", error) from None
            raise
        return move


def _put_back(client, name: str, current: int | None) -> None:
    try:
        if current is None:
            client.delete_registered_model_alias(name, CHAMPION)
        else:
            client.set_registered_model_alias(name, CHAMPION, str(current))
    except Exception as error:  # noqa: BLE001 - the original failure is the one to report
        _log.warning("@champion of '%s' could not be put back to %s (%s)", name, _version_text(current),
                     first_line(error))


def history(client, name: str) -> list[Move]:
    """The champion history of model `name`, oldest first (empty for a registry that predates it)."""
    return _parse_history(_registered_model(client, name).tags)


def holder_since(client, name: str) -> Move | None:
    """The history entry of the current @champion holder; None when nobody holds it, or when the
    history does not know how it got it (set before the history, or outside this module)."""
    model = _registered_model(client, name)
    current = _alias_version(model, CHAMPION)
    moves = _parse_history(model.tags)
    if current is not None and moves and moves[-1].version == current:
        return moves[-1]
    return None


def set_challenger(client, name: str, version: int) -> bool:
    """Under the lock, move @challenger to `version` if it is newer than the current holder (or
    nobody holds it); whether it moved. @challenger never moves backwards."""
    from mlflow.exceptions import MlflowException

    with champion_lock(client, name, owner=f"set @challenger to v{int(version)}"):
        current = _alias_version(_registered_model(client, name), CHALLENGER)
        if current is not None and int(version) <= current:
            return False
        try:
            client.set_registered_model_alias(name, CHALLENGER, str(int(version)))
        except MlflowException as error:
            raise registry_error(client, f"@challenger of '{name}' could not be moved to v{int(version)}",
                                  error) from None
        return True


def format_history(moves: list[Move], current: int | None) -> str:
    """The table `resnet-mlops champion --history` prints, oldest first: version, from, to ("now"
    for the holder), by, source, reason. A holder the history did not see take @champion (before
    the history began, or moved outside it) shows with an unknown start."""
    if not moves and current is None:
        return "No version holds @champion, and there is no champion history."
    unknown = "unknown"
    rows = []
    for index, move in enumerate(moves):
        before = moves[index - 1] if index else None
        if move.previous is not None and (before is None or before.version != move.previous):
            why = ("held @champion before the champion history began" if before is None
                   else "took @champion outside the champion history")
            rows.append((f"v{move.previous}", unknown, move.at, "-", "-", why))
        after = moves[index + 1] if index + 1 < len(moves) else None
        if after is not None:
            until = after.at if after.previous == move.version else unknown
        else:
            until = "now" if move.version == current else unknown
        rows.append((f"v{move.version}", move.at, until, move.by, move.source, move.reason))
    if current is not None and (not moves or moves[-1].version != current):
        why = ("held @champion before the champion history began" if not moves
               else "took @champion outside the champion history")
        rows.append((f"v{current}", unknown, "now", "-", "-", why))
    header = ("version", "from", "to", "by", "source", "reason")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip()
             for row in [header, *rows]]
    if any(row[1] == unknown for row in rows):
        lines.append(f"({unknown}: not in the champion history: @champion was set before it began, or "
                     f"outside resnet-mlops)")
    return "\n".join(lines)


# -- helpers ------------------------------------------------------------------------------------

def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UserError(f"no registered model '{name}' in the model registry at "
                            f"{registry_uri(client)}; run the pipeline first") from None
        raise registry_error(client, f"the registered model '{name}' could not be read", error) from None


def _alias_version(model, alias: str) -> int | None:
    version = model.aliases.get(alias)
    return None if version is None else int(version)


def _history_key(sequence: int) -> str:
    return f"{HISTORY_PREFIX}{sequence:06d}"


def _sequence_of(key: str) -> int | None:
    suffix = key[len(HISTORY_PREFIX):] if key.startswith(HISTORY_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def _last_sequence(tags: dict) -> int:
    return max((number for number in map(_sequence_of, tags) if number is not None), default=0)


def _encode(move: Move) -> str:
    return json.dumps({"version": move.version, "previous": move.previous, "at": move.at, "reason": move.reason,
                       "by": move.by, "source": move.source}, ensure_ascii=False)


def _parse_history(tags: dict) -> list[Move]:
    moves = []
    for key, value in tags.items():
        sequence = _sequence_of(key)
        if sequence is None:
            continue
        try:
            entry = json.loads(value)
            previous = entry.get("previous")
            moves.append(Move(sequence, int(entry["version"]), None if previous is None else int(previous),
                              str(entry["at"]), str(entry.get("reason", "")), str(entry.get("by", "")),
                              str(entry.get("source", ""))))
        except (ValueError, TypeError, KeyError, AttributeError):
            _log.warning("skipped the unreadable champion history entry %s = %r", key, value[:200])
    return sorted(moves, key=lambda move: move.sequence)


def _version_text(version: int | None) -> str:
    return "nobody" if version is None else f"v{version}"


