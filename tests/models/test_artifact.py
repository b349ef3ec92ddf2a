import json
import os

import numpy as np
import pytest

from hsops._hashing import sha256_file
from hsops.models import artifact
from hsops.models.artifact import (
    MANIFEST,
    ArtifactError,
    manifest_digest,
    publish,
    staging_dir,
    verify,
    write_manifest,
)


def make_artifact(directory, weights=(1.0, 2.0, 3.0), meta=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.json").write_text(json.dumps({"kind": "test"}), encoding="utf-8")
    np.savez(directory / "weights.npz", w=np.asarray(weights, dtype=np.float32))
    write_manifest(directory, meta or {"name": "hs6", "version": 1})
    return directory


def test_manifest_lists_every_file_with_hash_and_size(tmp_path):
    d = make_artifact(tmp_path / "a")
    manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format"] == "hsops.artifact/1"
    assert set(manifest["files"]) == {"model.json", "weights.npz"}
    for name, entry in manifest["files"].items():
        assert len(entry["sha256"]) == 64
        assert entry["bytes"] == (d / name).stat().st_size
    assert manifest["metadata"] == {"name": "hs6", "version": 1}
    assert verify(d) == manifest


def test_tampered_file_is_refused(tmp_path):
    d = make_artifact(tmp_path / "a")
    np.savez(d / "weights.npz", w=np.array([1.0, 2.0, 3.5], dtype=np.float32))
    with pytest.raises(ArtifactError, match="weights.npz does not match"):
        verify(d)


def test_truncated_file_is_refused(tmp_path):
    d = make_artifact(tmp_path / "a")
    data = (d / "weights.npz").read_bytes()
    (d / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="weights.npz"):
        verify(d)


def test_extra_file_is_refused(tmp_path):
    d = make_artifact(tmp_path / "a")
    (d / "notes.txt").write_text("added later", encoding="utf-8")
    with pytest.raises(ArtifactError, match="not in the manifest.*notes.txt"):
        verify(d)


def test_extra_directory_is_refused(tmp_path):
    d = make_artifact(tmp_path / "a")
    (d / "sub").mkdir()
    with pytest.raises(ArtifactError, match="sub"):
        verify(d)


def test_missing_file_is_refused(tmp_path):
    d = make_artifact(tmp_path / "a")
    (d / "model.json").unlink()
    with pytest.raises(ArtifactError, match="model.json is listed in the manifest but missing"):
        verify(d)


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "model.joblib", "weights.pt", "run.py"])
def test_pickles_and_code_are_not_exported(tmp_path, name):
    d = tmp_path / "a"
    d.mkdir()
    (d / "model.json").write_text("{}", encoding="utf-8")
    (d / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactError, match=name):
        write_manifest(d, {})
    assert not (d / MANIFEST).exists()


def _list_in_manifest(d, name, path):
    """Add ``path`` to the manifest of ``d`` under ``name``, with a correct hash."""
    manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (d / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def test_manifest_naming_a_pickle_is_refused(tmp_path):
    d = make_artifact(tmp_path / "a")
    (d / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    _list_in_manifest(d, "model.pkl", d / "model.pkl")
    with pytest.raises(ArtifactError, match="model.pkl: forbidden"):
        verify(d)


def test_manifest_with_a_path_outside_is_refused(tmp_path):
    d = make_artifact(tmp_path / "a")
    (tmp_path / "outside.json").write_text("{}", encoding="utf-8")
    _list_in_manifest(d, "../outside.json", tmp_path / "outside.json")
    with pytest.raises(ArtifactError, match="forbidden"):
        verify(d)


def test_no_or_broken_manifest(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        verify(d)
    (d / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        verify(d)
    (d / MANIFEST).write_text("{}", encoding="utf-8")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        verify(d)


@pytest.mark.parametrize("files", [["model.json"], {"model.json": "ce21b2f8"}, {"model.json": {"bytes": 2}}])
def test_malformed_file_list_is_an_artifact_error(tmp_path, files):
    d = tmp_path / "a"
    d.mkdir()
    (d / "model.json").write_text("{}", encoding="utf-8")
    (d / MANIFEST).write_text(json.dumps({"format": "hsops.artifact/1", "files": files}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        verify(d)


def test_publish_moves_staging_to_its_digest(tmp_path):
    root = tmp_path / "artifacts"
    staging = make_artifact(staging_dir(root))
    assert staging.parent == root and staging.name.startswith(".staging-")
    digest = manifest_digest(staging)
    final = publish(staging, root)
    assert final == root / digest
    assert not staging.exists()
    assert sorted(p.name for p in root.iterdir()) == [digest]  # no staging left behind
    verify(final)


def test_publishing_the_same_content_twice_is_a_no_op(tmp_path):
    root = tmp_path / "artifacts"
    first = publish(make_artifact(staging_dir(root)), root)
    mtime = (first / "weights.npz").stat().st_mtime_ns
    second_staging = make_artifact(staging_dir(root))
    second = publish(second_staging, root)
    assert second == first
    assert not second_staging.exists()
    assert [p.name for p in root.iterdir()] == [first.name]
    assert (first / "weights.npz").stat().st_mtime_ns == mtime


def test_different_files_publish_elsewhere(tmp_path):
    root = tmp_path / "artifacts"
    a = publish(make_artifact(staging_dir(root)), root)
    b = publish(make_artifact(staging_dir(root), weights=(9.0,)), root)
    assert a != b
    assert sorted(p.name for p in root.iterdir()) == sorted([a.name, b.name])


def test_address_depends_on_the_files_not_the_metadata(tmp_path):
    # metadata holds creation times: a deterministic re-training must land on one address
    root = tmp_path / "artifacts"
    a = publish(make_artifact(staging_dir(root), meta={"created": "monday"}), root)
    b = publish(make_artifact(staging_dir(root), meta={"created": "tuesday"}), root)
    assert a == b
    assert verify(a)["metadata"] == {"created": "monday"}  # the first one stays


def test_publish_refuses_an_unverified_staging(tmp_path):
    root = tmp_path / "artifacts"
    staging = make_artifact(staging_dir(root))
    (staging / "model.json").write_text('{"kind": "evil"}', encoding="utf-8")
    with pytest.raises(ArtifactError):
        publish(staging, root)
    assert sorted(p.name for p in root.iterdir()) == [staging.name]  # nothing published


def test_publish_across_filesystems_falls_back_to_copy(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    staging = make_artifact(tmp_path / "elsewhere")
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 1:
            raise OSError(18, "Invalid cross-device link")
        return real_rename(src, dst)

    monkeypatch.setattr(artifact.os, "rename", rename)
    final = publish(staging, root)
    verify(final)
    assert not staging.exists()
    assert [p.name for p in root.iterdir()] == [final.name]


def test_a_published_artifact_whose_manifest_was_rewritten_is_refused(tmp_path):
    final = publish(make_artifact(staging_dir(tmp_path / "root")), tmp_path / "root")
    np.savez(final / "weights.npz", w=np.asarray([9.0], dtype=np.float32))
    write_manifest(final, {"name": "hs6", "version": 1})  # consistent files, wrong address
    with pytest.raises(ArtifactError, match="content address"):
        verify(final)
