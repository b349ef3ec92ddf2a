"""ObjectStore conformance: only the Backend contract, through the ``backend`` fixture."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest

from hsops.platform.backend import (
    INBOX_PREFIX,
    OBJECT_CREATED,
    BackendError,
    InvalidKey,
    ObjectNotFound,
)

BAD_KEYS = ["", "/abs", "a/../b", "..", ".", "./a", "a//b", "a/", "a\\b", "a\x00b", "a\nb", "tab\there",
            ".hidden", "a/.tmp-1-x", "x" * 1025, "é" * 513]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def drain(backend, queue: str) -> list:
    messages = []
    while batch := backend.events.receive(queue, max_messages=10):
        for message in batch:
            backend.events.ack(message)
        messages.extend(batch)
    return messages


def test_put_get_head_roundtrip(backend):
    info = backend.objects.put("models/a/model.json", b'{"w": 1}')
    assert (info.key, info.size, info.sha256) == ("models/a/model.json", 8, sha(b'{"w": 1}'))
    assert datetime.fromisoformat(info.modified).utcoffset() is not None  # ISO with a zone
    assert backend.objects.get("models/a/model.json") == b'{"w": 1}'
    head = backend.objects.head("models/a/model.json")
    assert (head.key, head.size, head.sha256) == (info.key, info.size, info.sha256)


def test_empty_object(backend):
    info = backend.objects.put("empty", b"")
    assert (info.size, info.sha256) == (0, sha(b""))
    assert backend.objects.get("empty") == b""


def test_put_replaces(backend):
    backend.objects.put("k", b"old")
    info = backend.objects.put("k", b"new content")
    assert backend.objects.get("k") == b"new content"
    assert backend.objects.head("k").sha256 == info.sha256 == sha(b"new content")
    assert [i.key for i in backend.objects.list()] == ["k"]


def test_put_from_a_path_str_or_pathlike(backend, tmp_path):
    source = tmp_path / "big.bin"
    data = bytes(range(256)) * (3 * 4096 + 17)  # several read chunks and a ragged end
    source.write_bytes(data)
    for key, arg in (("a/path", source), ("a/str", str(source))):
        info = backend.objects.put(key, arg)
        assert (info.size, info.sha256) == (len(data), sha(data))
        assert backend.objects.get(key) == data


def test_missing_objects(backend):
    with pytest.raises(ObjectNotFound, match="nope"):
        backend.objects.get("nope")
    with pytest.raises(KeyError):  # ObjectNotFound is a KeyError too
        backend.objects.head("nope")
    assert backend.objects.delete("nope") is False


def test_delete(backend):
    backend.objects.put("d/x", b"1")
    assert backend.objects.delete("d/x") is True
    assert backend.objects.delete("d/x") is False
    with pytest.raises(ObjectNotFound):
        backend.objects.get("d/x")
    assert backend.objects.list() == []


def test_list_is_sorted_and_filtered_by_prefix(backend):
    for key in ["b/2", "a/1", "inbox/z.csv", "inbox/a.csv", "a/0/deep", "ab"]:
        backend.objects.put(key, key.encode())
    assert [i.key for i in backend.objects.list()] == ["a/0/deep", "a/1", "ab", "b/2", "inbox/a.csv", "inbox/z.csv"]
    assert [i.key for i in backend.objects.list("a/")] == ["a/0/deep", "a/1"]
    assert [i.key for i in backend.objects.list("a")] == ["a/0/deep", "a/1", "ab"]  # a prefix, not a folder
    assert [i.key for i in backend.objects.list("inb")] == ["inbox/a.csv", "inbox/z.csv"]
    assert backend.objects.list("zzz/") == []
    listed = {i.key: i for i in backend.objects.list()}
    assert listed["b/2"].sha256 == sha(b"b/2") and listed["b/2"].size == 3


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused_everywhere(backend, key):
    for call in (lambda: backend.objects.put(key, b"x"), lambda: backend.objects.get(key),
                 lambda: backend.objects.head(key), lambda: backend.objects.delete(key)):
        with pytest.raises(InvalidKey):
            call()
    assert backend.objects.list() == []


@pytest.mark.parametrize("key", ["a", "a/b/c.csv", "inbox/2024-01-01 file (1).csv", "ünï/ключ", "a..b", "x" * 255])
def test_valid_unusual_keys(backend, key):
    backend.objects.put(key, b"ok")
    assert backend.objects.get(key) == b"ok"
    assert [i.key for i in backend.objects.list()] == [key]


def test_download(backend, tmp_path):
    backend.objects.put("m/model.bin", b"weights")
    dest = tmp_path / "out" / "model.bin"
    info = backend.objects.download("m/model.bin", dest)
    assert dest.read_bytes() == b"weights"
    assert (info.key, info.size, info.sha256) == ("m/model.bin", 7, sha(b"weights"))
    dest.write_bytes(b"stale and longer")
    backend.objects.download("m/model.bin", str(dest))  # replaces, str accepted
    assert dest.read_bytes() == b"weights"


def test_download_of_a_missing_object_leaves_dest_alone(backend, tmp_path):
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"mine")
    with pytest.raises(ObjectNotFound):
        backend.objects.download("missing", dest)
    assert dest.read_bytes() == b"mine"


def test_metadata_is_kept(backend):
    info = backend.objects.put("m/x", b"1", metadata={"source": "upload", "run-id": "42"})
    assert info.metadata == {"source": "upload", "run-id": "42"}
    assert backend.objects.head("m/x").metadata == {"source": "upload", "run-id": "42"}
    assert backend.objects.put("m/x", b"2").metadata == {}  # a put replaces the metadata too
    assert backend.objects.head("m/x").metadata == {}


def test_bad_data_and_metadata(backend, tmp_path):
    with pytest.raises(BackendError):
        backend.objects.put("k", 12345)
    with pytest.raises(BackendError):
        backend.objects.put("k", str(tmp_path / "no-such-file"))  # a str is a path
    with pytest.raises(BackendError):
        backend.objects.put("k", b"x", metadata={"k": 1})
    assert backend.objects.list() == []


def test_content_addressed(backend):
    first = backend.objects.put_content_addressed("blobs", b"same", suffix=".bin")
    again = backend.objects.put_content_addressed("blobs/", b"same", suffix=".bin")
    assert first.key == again.key == f"blobs/{sha(b'same')}.bin"
    assert len(backend.objects.list("blobs/")) == 1


def test_inbox_put_publishes_object_created_once_per_content(backend):
    info = backend.objects.put(INBOX_PREFIX + "batch.csv", b"a,b\n1,2\n")
    backend.objects.put(INBOX_PREFIX + "batch.csv", b"a,b\n1,2\n")  # same content again: no event
    bodies = [m.body for m in drain(backend, OBJECT_CREATED)]
    assert bodies == [{"type": OBJECT_CREATED, "key": "inbox/batch.csv", "size": info.size, "sha256": info.sha256}]
    changed = backend.objects.put(INBOX_PREFIX + "batch.csv", b"a,b\n3,4\n")
    assert [m.body["sha256"] for m in drain(backend, OBJECT_CREATED)] == [changed.sha256]


def test_puts_outside_the_inbox_publish_nothing(backend):
    backend.objects.put("models/m.bin", b"x")
    backend.objects.put("inboxes/x.csv", b"x")  # "inbox/" is a folder prefix, not any "inbox"
    assert backend.events.receive(OBJECT_CREATED) == []
