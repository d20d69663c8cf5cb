"""The champion history, and `@champion` moves under the registry-wide lock (`registry/champions.py`).

The unit tests use a SQLite store of their own; the race runs racer processes against a real
`mlflow server` (two workers on one SQLite file), because the lock has to hold for every client
of one registry, not for the threads of one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from resnet_mlops.errors import UserError
from resnet_mlops.registry import champions, lock
from resnet_mlops.registry.champions import (ChampionChanged, Move, format_history, history, holder_since,
                                             move_champion, set_challenger)
from resnet_mlops.registry.lock import champion_lock
from support.mlflow_server import mlflow_server
from support.served_model import free_port
from support.tracking_uri import tracking_store

TESTS = Path(__file__).parent
RACERS = 6
ROUNDS = 10


@pytest.fixture
def client(tmp_path):
    with tracking_store(f"sqlite:///{tmp_path}/mlflow.db"):
        yield MlflowClient()


def make_versions(client, name: str, count: int, source) -> None:
    """Model `name` with versions 1..count (no real models: the registry only needs a source; a
    server takes no local path without a run, and does not read the source)."""
    client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(name, source=source.as_uri() if isinstance(source, Path) else source,
                                    run_id=None, await_creation_for=0)


def aliases(client, name: str) -> dict:
    return {alias: int(version) for alias, version in client.get_registered_model(name).aliases.items()}


def test_moves_are_recorded_in_order_with_who_and_why(client, tmp_path):
    make_versions(client, "m", 3, tmp_path)
    first = move_champion(client, "m", 1, "no champion yet", "register (run r1)", expected=None)
    second = move_champion(client, "m", 3, "test accuracy 0.9 beats v1's 0.8", "register (run r3)", expected=1)

    assert (first.sequence, first.version, first.previous) == (1, 1, None)
    assert (second.sequence, second.version, second.previous) == (2, 3, 1)
    assert second.by == lock.user_at_host() and "@" in second.by
    assert datetime.fromisoformat(second.at.replace("Z", "+00:00")) <= datetime.now(timezone.utc)
    assert aliases(client, "m") == {"champion": 3}
    assert history(client, "m") == [first, second]
    assert holder_since(client, "m") == second
    assert sorted(client.get_registered_model("m").tags) == ["champion.history.000001", "champion.history.000002"]
    assert not [model.name for model in client.search_registered_models() if model.name != "m"]  # lock released

    table = format_history(history(client, "m"), current=3).splitlines()
    assert table[0].split() == ["version", "from", "to", "by", "source", "reason"]
    assert table[1].split()[:3] == ["v1", first.at, second.at]
    assert table[2].split()[:3] == ["v3", second.at, "now"]
    assert table[2].endswith("test accuracy 0.9 beats v1's 0.8") and "register (run r3)" in table[2]
    assert len(table) == 3


def test_a_stale_expectation_changes_nothing(client, tmp_path):
    make_versions(client, "m", 3, tmp_path)
    move_champion(client, "m", 1, "no champion yet", "register", expected=None)
    move_champion(client, "m", 2, "better", "register", expected=1)
    before = history(client, "m")

    with pytest.raises(ChampionChanged) as raised:
        move_champion(client, "m", 3, "better than v1", "register", expected=1)
    assert raised.value.current == 2
    assert "\n" not in str(raised.value) and "v2" in str(raised.value)
    with pytest.raises(ChampionChanged) as raised:
        move_champion(client, "m", 3, "first", "register", expected=None)
    assert raised.value.current == 2
    assert aliases(client, "m") == {"champion": 2}
    assert history(client, "m") == before


def test_a_failed_move_leaves_alias_history_and_lock_as_they_were(client, tmp_path):
    make_versions(client, "m", 1, tmp_path)
    move_champion(client, "m", 1, "no champion yet", "register", expected=None)
    with pytest.raises(UserError, match="could not be moved to v7") as raised:
        move_champion(client, "m", 7, "no such version", "rollback", expected=1)
    assert "\n" not in str(raised.value)
    assert aliases(client, "m") == {"champion": 1}
    assert len(history(client, "m")) == 1
    move_champion(client, "m", 1, "the lock was released", "rollback", expected=1)


def test_a_champion_older_than_the_history_has_an_unknown_start(client, tmp_path):
    make_versions(client, "m", 3, tmp_path)
    client.set_registered_model_alias("m", "champion", "2")  # an older registry: no history

    assert history(client, "m") == [] and holder_since(client, "m") is None
    table = format_history([], current=2).splitlines()
    assert table[1].split()[:3] == ["v2", "unknown", "now"]
    assert "before the champion history began" in table[1] and "unknown" in table[-1]

    move = move_champion(client, "m", 3, "better", "register", expected=2)
    assert move.previous == 2
    table = format_history(history(client, "m"), current=3).splitlines()
    assert [line.split()[:3] for line in table[1:3]] == [["v2", "unknown", move.at], ["v3", move.at, "now"]]

    client.set_registered_model_alias("m", "champion", "1")  # moved outside this module
    assert holder_since(client, "m") is None
    table = format_history(history(client, "m"), current=1).splitlines()
    assert [line.split()[:3] for line in table[1:4]] == [["v2", "unknown", move.at], ["v3", move.at, "unknown"],
                                                         ["v1", "unknown", "now"]]
    assert "outside the champion history" in table[3]
    assert format_history([], current=None).startswith("No version holds @champion")


def test_history_entries_stay_small_and_one_line(client, tmp_path):
    make_versions(client, "m", 1, tmp_path)
    move = move_champion(client, "m", 1, "why\n" + "x" * 20_000, "register " * 100, expected=None)
    value = client.get_registered_model("m").tags["champion.history.000001"]
    assert len(value) < 2000  # the registered_model_tags.value column is VARCHAR(5000)
    assert "\n" not in move.reason and move.reason.endswith("...") and len(move.reason) == champions.MAX_REASON
    assert history(client, "m") == [move]


def test_challenger_never_moves_backwards(client, tmp_path):
    make_versions(client, "m", 4, tmp_path)
    assert set_challenger(client, "m", 2) is True
    assert set_challenger(client, "m", 1) is False
    assert set_challenger(client, "m", 2) is False
    assert aliases(client, "m") == {"challenger": 2}
    assert set_challenger(client, "m", 4) is True
    assert set_challenger(client, "m", 3) is False
    assert aliases(client, "m") == {"challenger": 4}


def test_the_lock_is_reentrant_in_one_thread(client, tmp_path):
    make_versions(client, "m", 2, tmp_path)
    with champion_lock(client, "m", "register", wait_s=1):
        move_champion(client, "m", 1, "no champion yet", "register", expected=None)
        set_challenger(client, "m", 2)
    assert aliases(client, "m") == {"champion": 1, "challenger": 2}


def plant_lock(client, name: str, owner: str, age_s: float) -> None:
    """The lock another process would hold, taken `age_s` seconds ago."""
    since = datetime.now(timezone.utc) - timedelta(seconds=age_s)
    client.create_registered_model(name + lock.LOCK_SUFFIX, tags={
        "owner": owner, "by": "someone@elsewhere pid 4242", "token": "theirs",
        "acquired_at": since.strftime("%Y-%m-%dT%H:%M:%SZ")})


def test_a_held_lock_makes_the_next_one_wait_then_fail_in_one_line(client, tmp_path):
    make_versions(client, "m", 1, tmp_path)
    plant_lock(client, "m", "register (run abc)", age_s=5)
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        with champion_lock(client, "m", "rollback", wait_s=0.8, stale_s=600):
            pytest.fail("took a lock that another holder has")
    waited = time.monotonic() - started
    message = str(raised.value)
    assert 0.8 <= waited < 5
    assert "\n" not in message
    assert "register (run abc)" in message and "someone@elsewhere" in message and "m.champion-lock" in message
    assert aliases(client, "m") == {}


def test_a_waiter_gets_the_lock_when_the_holder_releases_it(client, tmp_path):
    make_versions(client, "m", 2, tmp_path)
    holding, order = threading.Event(), []

    def holder():
        with champion_lock(client, "m", "first", wait_s=5):
            holding.set()
            time.sleep(1.0)
            order.append("first done")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    with champion_lock(client, "m", "second", wait_s=10):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


def test_a_waiting_move_stops_waiting_when_the_champion_moves(client, tmp_path):
    make_versions(client, "m", 3, tmp_path)
    move_champion(client, "m", 1, "no champion yet", "register", expected=None)
    plant_lock(client, "m", "another register", age_s=1)
    mover = threading.Timer(0.5, client.set_registered_model_alias, ("m", "champion", "2"))
    mover.start()
    started = time.monotonic()
    with pytest.raises(ChampionChanged) as raised:
        move_champion(client, "m", 3, "better than v1", "register", expected=1)  # would wait 120 s for the lock
    mover.join()
    assert raised.value.current == 2 and time.monotonic() - started < 10
    assert len(history(client, "m")) == 1


def test_a_stale_lock_is_broken_and_taken(client, tmp_path, caplog):
    make_versions(client, "m", 1, tmp_path)
    plant_lock(client, "m", "a killed register", age_s=3600)
    with caplog.at_level("WARNING", logger=lock.__name__):
        move_champion(client, "m", 1, "no champion yet", "register", expected=None)
    assert "broke the stale lock 'm.champion-lock' of a killed register" in caplog.text
    assert aliases(client, "m") == {"champion": 1}
    names = {model.name for model in client.search_registered_models()}
    assert names == {"m"}  # neither the stale lock nor the break lock is left


def test_a_lock_is_not_stale_before_stale_s(client, tmp_path):
    make_versions(client, "m", 1, tmp_path)
    plant_lock(client, "m", "a slow register", age_s=30)
    with pytest.raises(UserError, match="a slow register"):
        with champion_lock(client, "m", "rollback", wait_s=0.3, stale_s=60):
            pass
    with champion_lock(client, "m", "rollback", wait_s=0.3, stale_s=10):
        pass


# -- the race, against a real `mlflow server` ---------------------------------------------------

def racer(uri: str, folder: str, index: int, rounds: int) -> None:
    """One racer process: each round, read @champion, wait for the start, move it to its own version."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    client = MlflowClient(uri)
    folder = Path(folder)
    for round_ in range(rounds):
        name, version = f"race-{round_}", 2 + index
        _wait_for(folder / f"setup-{round_}")
        expected = int(client.get_model_version_by_alias(name, "champion").version)
        (folder / f"ready-{round_}-{index}").touch()
        _wait_for(folder / f"go-{round_}", poll_s=0.001)
        try:
            move = move_champion(client, name, version, f"racer {index}", f"racer {index}", expected=expected)
            result = {"outcome": "moved", "expected": expected, "move": move.__dict__}
        except ChampionChanged as changed:
            result = {"outcome": "changed", "expected": expected, "current": changed.current}
        except Exception as error:  # noqa: BLE001 - the test reports it
            result = {"outcome": "error", "expected": expected, "error": f"{type(error).__name__}: {error}"}
        partial = folder / f"result-{round_}-{index}.partial"
        partial.write_text(json.dumps(result))
        partial.rename(folder / f"result-{round_}-{index}")


def _wait_for(path: Path, timeout_s: float = 120, poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(poll_s)


@contextmanager
def racer_processes(uri: str, folder: Path, count: int, rounds: int):
    """`count` racer processes, each its own Python, started once for all the rounds."""
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}]; import test_champion_history as t; "
            f"t.racer(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))")
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    processes = []
    for index in range(count):
        with open(folder / f"racer-{index}.log", "wb") as log:
            processes.append(subprocess.Popen([sys.executable, "-c", code, uri, str(folder), str(index), str(rounds)],
                                              env=environment, stdout=subprocess.DEVNULL, stderr=log))
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def wait_for_files(folder: Path, pattern: str, count: int, processes, timeout_s: float = 90) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while len(found := sorted(folder.glob(pattern))) < count:
        dead = [index for index, process in enumerate(processes) if process.poll() not in (None, 0)]
        if dead or time.monotonic() > deadline:
            logs = "\n".join((folder / f"racer-{index}.log").read_text()[-2000:] for index in dead or range(count))
            raise AssertionError(f"{len(found)} of {count} {pattern} (racers {dead} died):\n{logs}")
        time.sleep(0.01)
    return found


def test_racing_registers_move_champion_exactly_once(tmp_path):
    """RACERS processes read champion v1, start together and each move @champion to its own
    version, expecting v1: exactly one may win, every round, and the history must say so."""
    started = time.monotonic()
    uri = f"http://127.0.0.1:{free_port()}"
    folder = tmp_path / "race"
    folder.mkdir()
    problems, winners_per_round, race_s = [], [], []
    # The racers start (and import MLflow) while the server does: on two cores that is seconds.
    with racer_processes(uri, folder, RACERS, ROUNDS) as processes, \
            mlflow_server(tmp_path / "server", workers=2, port=int(uri.rpartition(":")[2])), tracking_store(uri):
        client = MlflowClient(uri)
        for round_ in range(ROUNDS):
            name = f"race-{round_}"
            make_versions(client, name, 1 + RACERS, "s3://never-read/model")
            move_champion(client, name, 1, "the first champion", "test setup", expected=None)
            (folder / f"setup-{round_}").touch()
            wait_for_files(folder, f"ready-{round_}-*", RACERS, processes)
            go = time.monotonic()
            (folder / f"go-{round_}").touch()
            results = [json.loads(path.read_text())
                       for path in wait_for_files(folder, f"result-{round_}-?", RACERS, processes)]
            race_s.append(time.monotonic() - go)
            winners_per_round.append(sum(result["outcome"] == "moved" for result in results))
            problems += [f"round {round_}: {problem}" for problem in race_problems(client, name, results)]
    elapsed = time.monotonic() - started

    several = sum(winners > 1 for winners in winners_per_round)
    print(f"\n{ROUNDS} rounds of {RACERS} racers in {elapsed:.1f} s (races {min(race_s):.2f}-{max(race_s):.2f} s); "
          f"winners per round {winners_per_round}; rounds with 2+ winners: {several}")
    assert not problems, (f"rounds with 2+ winners: {several} of {ROUNDS}; winners per round "
                          f"{winners_per_round}:\n" + "\n".join(problems))


def race_problems(client, name: str, results: list[dict]) -> list[str]:
    """What is wrong with one round's outcome: the racers' results, the alias and the history."""
    problems = []
    if any(result["expected"] != 1 for result in results):
        problems.append(f"not every racer read v1 as the champion: {results}")
    errors = [result["error"] for result in results if result["outcome"] == "error"]
    if errors:
        problems.append(f"racers failed: {errors}")
    won = [Move(**result["move"]) for result in results if result["outcome"] == "moved"]
    if len(won) != 1:
        problems.append(f"{len(won)} racers moved @champion (versions {[move.version for move in won]})")
    holder = aliases(client, name).get("champion")
    moves = history(client, name)
    entries = [(move.version, move.previous) for move in moves]
    if len(won) == 1:
        winner = won[0].version
        lost = [result for result in results if result["outcome"] == "changed" and result["current"] != winner]
        if lost:
            problems.append(f"losers saw another holder than the winner v{winner}: {lost}")
        if holder != winner:
            problems.append(f"@champion is held by v{holder}, not by the winner v{winner}")
        if entries[-1:] != [(winner, 1)]:
            problems.append(f"the history ends with {entries[-1:]}, not the winner's move ({winner}, 1)")
    if sorted(moves[1:], key=lambda move: move.sequence) != sorted(won, key=lambda move: move.sequence):
        problems.append(f"the history {entries} does not hold exactly the racers' moves "
                        f"{[(move.version, move.previous) for move in won]} (a version lost)")
    if moves and moves[-1].version != holder:
        problems.append(f"the history's last entry is v{moves[-1].version}, but v{holder} holds @champion")
    if [move.sequence for move in moves] != list(range(1, len(moves) + 1)):
        problems.append(f"history sequences {[move.sequence for move in moves]} are not 1, 2, ...")
    chain = [None] + [move.version for move in moves[:-1]]
    if [move.previous for move in moves] != chain:
        problems.append(f"the history chain is broken: {entries}")
    return problems
