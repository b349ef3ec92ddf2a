"""The local SQLite state store: predictions log, WAL mode, threads, processes, migrations."""

from __future__ import annotations

import sqlite3
from contextlib import closing
import subprocess
import sys
import textwrap
import threading

import pytest

from hsops.platform.local import StateStore
from hsops.platform.local import state_store as module


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HSOPS_HOME", str(home))
    return home


@pytest.fixture
def store(home):
    store = StateStore()
    yield store
    store.close()


def row(request_id: str, **overrides) -> dict:
    base = {"request_id": request_id, "batch_id": request_id.split("-")[0],
            "created_at": "2026-01-02T03:04:05.000+00:00", "text": "PLASTIC CUPS", "hs_code": "392410",
            "confidence": 0.91, "abstain": False,
            "model_version": "hs-classifier@1",
            "alternatives": [{"hs_code": "392490", "hs_description": "Other", "confidence": 0.05}]}
    return {**base, **overrides}


def test_lives_in_hsops_home_in_wal_mode(home, store):
    assert store.path == home / "state.db" and store.path.is_file()
    with closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_directory_means_the_state_file_inside_it(tmp_path):
    store = StateStore(tmp_path)
    try:
        assert store.path == tmp_path / "state.db"
        store.log_predictions([row("a-0")])
    finally:
        store.close()
    other = StateStore(tmp_path / "state.db")
    try:
        assert other.count_predictions() == 1
    finally:
        other.close()


def test_log_and_read_back_a_prediction(store):
    assert store.log_predictions([row("abc-0"), row("abc-1", abstain=True, confidence=0.2)]) == 2
    got = store.get_prediction("abc-1")
    assert got == row("abc-1", abstain=True, confidence=0.2)
    assert isinstance(got["abstain"], bool) and isinstance(got["alternatives"], list)
    assert store.count_predictions() == 2


def test_unknown_request_id_is_none(store):
    assert store.get_prediction("nope") is None


def test_count_by_model_version(store):
    store.log_predictions([row("a-0"), row("a-1", model_version="hs-classifier@2"), row("a-2")])
    assert store.count_predictions(model_version="hs-classifier@1") == 2
    assert store.count_predictions(model_version="hs-classifier@2") == 1


def test_a_redelivered_row_is_stored_once(store):
    store.log_predictions([row("a-0")])
    assert store.log_predictions([row("a-0", hs_code="999999"), row("a-1")]) == 1
    assert store.count_predictions() == 2
    assert store.get_prediction("a-0")["hs_code"] == "392410"  # the first write stands


def test_missing_created_at_is_filled_in(store):
    store.log_predictions([row("a-0", created_at=None)])
    assert store.get_prediction("a-0")["created_at"].endswith("+00:00")


def test_a_row_without_required_fields_is_refused_whole(store):
    with pytest.raises(ValueError, match=r"row 1 lacks \['hs_code'\]"):
        store.log_predictions([row("a-0"), {**row("a-1"), "hs_code": None}])
    assert store.count_predictions() == 0


def test_empty_batch_is_a_no_op(store):
    assert store.log_predictions([]) == 0


def test_data_survives_reopening(home, store):
    store.log_predictions([row("a-0")])
    store.close()
    reopened = StateStore()
    try:
        assert reopened.get_prediction("a-0")["text"] == "PLASTIC CUPS"
        assert reopened.schema_version == len(module.MIGRATIONS)
    finally:
        reopened.close()


def test_many_threads_log_concurrently(store):
    errors = []

    def worker(t: int) -> None:
        try:
            for i in range(25):
                store.log_predictions([row(f"t{t}-{i}"), row(f"t{t}-{i}-b")])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_predictions() == 8 * 25 * 2


def test_two_processes_write_to_the_same_file(store):
    script = textwrap.dedent(f"""
        from hsops.platform.local import StateStore
        store = StateStore({str(store.path)!r})
        for i in range(50):
            store.log_predictions([{{"request_id": f"child-{{i}}", "text": "t", "hs_code": "392410",
                                     "confidence": 0.5, "abstain": False, "model_version": "m@1"}}])
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    for i in range(50):
        store.log_predictions([row(f"parent-{i}")])
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert store.count_predictions() == 100


def test_a_new_migration_runs_once_on_an_existing_file(home, store, monkeypatch):
    store.log_predictions([row("a-0")])
    store.close()
    feedback = ("CREATE TABLE feedback (request_id TEXT PRIMARY KEY, hs_code TEXT)",)
    monkeypatch.setattr(module, "MIGRATIONS", [*module.MIGRATIONS, feedback])
    upgraded = StateStore()
    again = StateStore()  # a second open must not re-run it (CREATE TABLE would fail)
    try:
        assert upgraded.schema_version == len(module.MIGRATIONS)
        assert upgraded.get_prediction("a-0") is not None
        with closing(sqlite3.connect(upgraded.path)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"predictions", "feedback"} <= tables
    finally:
        upgraded.close()
        again.close()


def test_a_failing_migration_leaves_the_old_schema(home, store, monkeypatch):
    store.close()
    with monkeypatch.context() as patch:
        patch.setattr(module, "MIGRATIONS", [*module.MIGRATIONS, ("CREATE TABLE ok_table (x)", "NOT SQL")])
        with pytest.raises(sqlite3.OperationalError):
            StateStore()
    reopened = StateStore()
    try:
        assert reopened.schema_version == len(module.MIGRATIONS)  # the failed one not counted
        with closing(sqlite3.connect(reopened.path)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='ok_table'").fetchone()[0] == 0
    finally:
        reopened.close()


def test_satisfies_the_serving_sink_protocol(store):
    from hsops.serving import PredictionSink

    assert isinstance(store, PredictionSink)


def test_repr_names_the_file(store):
    assert repr(store) == f"StateStore({str(store.path)!r})"
