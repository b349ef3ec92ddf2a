"""LocalObjectStore internals: atomic puts, temp files of killed writers, sidecars, streaming."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest

from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import BackendError, InvalidKey, ObjectNotFound
from hsops.platform.local.event_bus import LocalEventBus
from hsops.platform.local.object_store import LocalObjectStore


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "objects")


def test_a_reader_during_puts_sees_the_old_or_the_new_object_never_a_part(store):
    size = 4 << 20
    versions = [b"a" * size, b"b" * size]
    store.put("big.bin", versions[0])

    def writer():
        for i in range(20):
            store.put("big.bin", versions[(i + 1) % 2])

    reads = 0
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(writer)
        while not writing.done() or reads == 0:
            data = store.get("big.bin")
            assert data in versions  # full length and one version throughout
            info = store.head("big.bin")
            assert info.sha256 in {hashlib.sha256(v).hexdigest() for v in versions}
            reads += 1
        writing.result()  # the writer's own errors, if any
    assert [p for p in os.listdir(store.root) if p.startswith(".tmp-")] == []


KILLED_WRITER = """
import os, signal, sys
from hsops.platform.local.object_store import LocalObjectStore
store = LocalObjectStore(sys.argv[1])
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die just before the swap
store.put("inbox/half.csv", b"x" * 100000)
"""


def test_temp_files_of_a_killed_writer_are_invisible_and_swept(store):
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store.root)], capture_output=True, check=False)
    assert proc.returncode == -9, proc.stderr
    leftovers = [p for p in os.listdir(store.root / "inbox") if p.startswith(".tmp-")]
    assert len(leftovers) == 1
    assert store.list() == []
    with pytest.raises(ObjectNotFound):
        store.get("inbox/half.csv")
    store.put("inbox/next.csv", b"ok")  # the next writer in that folder cleans up
    assert sorted(os.listdir(store.root / "inbox")) == ["next.csv"]
    assert [i.key for i in store.list()] == ["inbox/next.csv"]


def test_a_live_writers_temp_file_is_not_swept(store):
    folder = store.root / "inbox"
    folder.mkdir()
    mine = folder / f".tmp-{os.getpid()}-inflight"
    mine.write_bytes(b"being written")
    store.put("inbox/other.csv", b"x")
    assert mine.exists()


def test_a_file_placed_by_hand_is_hashed_on_read(store):
    (store.root / "manual").mkdir()
    (store.root / "manual" / "f.txt").write_bytes(b"by hand")
    info = store.head("manual/f.txt")
    assert (info.size, info.sha256, info.metadata) == (7, hashlib.sha256(b"by hand").hexdigest(), {})
    (store.root / "manual" / "f.txt").write_bytes(b"edited by hand!")  # the sidecar no longer matches
    assert store.head("manual/f.txt").sha256 == hashlib.sha256(b"edited by hand!").hexdigest()


def test_sidecars_are_not_listed_and_are_removed_with_the_object(store):
    store.put("a/b", b"1", metadata={"x": "y"})
    store.put("a/b", b"2", metadata={"x": "z"})
    assert store.head("a/b").metadata == {"x": "z"}
    sidecars = [f for _, _, files in os.walk(store.root / ".meta") for f in files]
    assert len(sidecars) == 1  # the replaced file's sidecar went with it
    assert store.delete("a/b")
    assert [f for _, _, files in os.walk(store.root / ".meta") for f in files] == []
    assert store.list() == []


def test_put_from_a_path_is_streamed(store, tmp_path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        handle.writelines(os.urandom(1 << 20) for _ in range(48))
    tracemalloc.start()
    try:
        info = store.put("big.bin", source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # 48 MiB moved through a few MiB of buffers
    assert info.size == 48 << 20
    assert store.head("big.bin").sha256 == info.sha256


def test_download_is_atomic_and_streamed(store, tmp_path):
    data = os.urandom(3 << 20)
    store.put("m.bin", data)
    dest = tmp_path / "dl" / "m.bin"
    info = store.download("m.bin", dest)
    assert dest.read_bytes() == data and info.sha256 == hashlib.sha256(data).hexdigest()
    assert [p for p in os.listdir(dest.parent) if p.startswith(".tmp-")] == []


def test_a_key_cannot_be_both_an_object_and_a_folder(store):
    store.put("a/b", b"1")
    with pytest.raises(InvalidKey, match="folder"):
        store.put("a", b"2")
    with pytest.raises(InvalidKey, match="folder"):
        store.put("a/b/c", b"3")
    assert [i.key for i in store.list()] == ["a/b"]
    store.delete("a/b")  # the emptied folder goes, so "a" is free again
    store.put("a", b"now a file")
    assert store.get("a") == b"now a file"


def test_metadata_validation(store):
    for bad in ({"": "x"}, {"bad key": "x"}, {"k": 1}, {1: "x"}, {"k": "v" * 3000}, ["k"]):
        with pytest.raises(BackendError):
            store.put("k", b"1", metadata=bad)
    assert store.list() == []


def test_bytearray_and_memoryview(store):
    assert store.put("ba", bytearray(b"abc")).sha256 == hashlib.sha256(b"abc").hexdigest()
    assert store.put("mv", memoryview(b"abcd")).size == 4


def test_list_prefix_is_validated(store):
    with pytest.raises(InvalidKey):
        store.list("../")
    with pytest.raises(InvalidKey):
        store.list("/etc/")


def test_same_inbox_content_publishes_once_even_after_the_event_was_handled(tmp_path):
    events = LocalEventBus(SqliteDatabase(tmp_path / "platform.db"))
    store = LocalObjectStore(tmp_path / "objects", events=events)
    store.put("inbox/x.csv", b"1")
    [message] = events.receive("object.created")
    events.ack(message)
    store.put("inbox/x.csv", b"1")  # dedup keys are kept for good
    assert events.receive("object.created") == []
    store.put("inbox/y.csv", b"1")  # same content under another key is another event
    assert [m.body["key"] for m in events.receive("object.created")] == ["inbox/y.csv"]
