"""Exported model artifacts: a directory of plain files plus a SHA-256 manifest.

An artifact holds only JSON, npz (loaded with ``allow_pickle=False``), ONNX or
safetensors files; ``manifest.json`` lists each with its SHA-256 and size. Loading
verifies every file first, so a truncated copy or a tampered weight file is refused
before any of it is parsed.

Artifacts are written to a staging directory and then renamed into a content-addressed
place (``<root>/<manifest digest>``), so a crash mid-export never leaves a half-written
model where a reader could find it, and exporting the same model twice is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from hsops._fs import staging_dir
from hsops._hashing import sha256_file

MANIFEST = "manifest.json"
_DIGEST_NAME = re.compile(r"[0-9a-f]{64}")
ALLOWED_SUFFIXES = {".json", ".npz", ".onnx", ".safetensors", ".txt"}


class ArtifactError(RuntimeError):
    """An artifact directory that is incomplete, tampered with or of a forbidden type."""


def write_manifest(directory: Path, metadata: dict) -> dict:
    """Hash every file in ``directory`` into ``manifest.json`` (with ``metadata``)."""
    directory = Path(directory)
    files = {}
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST:
            continue
        if not path.is_file() or path.suffix not in ALLOWED_SUFFIXES:
            raise ArtifactError(f"{path.name}: only plain files of types {sorted(ALLOWED_SUFFIXES)} may be exported")
        files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": "hsops.artifact/1", "files": files, "metadata": metadata}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return manifest


def manifest_digest(directory: Path) -> str:
    """Content address of an artifact: the hash of its files' hashes. The metadata
    (creation time, training duration) is left out, so a deterministic re-training
    lands on the same address."""
    manifest = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()


def verify(directory: Path) -> dict:
    """Check every file against the manifest; return the manifest or raise ArtifactError."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST}; not an hsops artifact")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()):
            raise TypeError("'files' must map each file name to its sha256")
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if _DIGEST_NAME.fullmatch(directory.name) and directory.name != manifest_digest(directory):
        # published artifacts are named by their manifest: a rewritten manifest shows here
        raise ArtifactError(f"{directory}: the manifest does not match the artifact's content address")
    present = {p.name for p in directory.iterdir() if p.name != MANIFEST}
    if extra := present - set(files):
        raise ArtifactError(f"{directory}: files not in the manifest: {sorted(extra)}")
    for name, entry in files.items():
        path = directory / name
        if Path(name).suffix not in ALLOWED_SUFFIXES or Path(name).name != name:
            raise ArtifactError(f"{name}: forbidden file in manifest")
        if not path.is_file():
            raise ArtifactError(f"{directory}: {name} is listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{directory}: {name} does not match its SHA-256 in the manifest")
    return manifest


def publish(staging: Path, root: Path) -> Path:
    """Move a finished staging directory (with manifest) to ``root/<digest>`` atomically."""
    staging, root = Path(staging), Path(root)
    verify(staging)
    final = root / manifest_digest(staging)
    root.mkdir(parents=True, exist_ok=True)
    if final.exists():  # same content already published
        shutil.rmtree(staging, ignore_errors=True)
        return final
    try:
        os.rename(staging, final)
    except OSError:
        if final.exists():  # another process published the same content meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            return final
        # staging on another filesystem: copy next to root, then rename
        tmp = staging_dir(root, prefix=".incoming-")
        try:
            shutil.copytree(staging, tmp, dirs_exist_ok=True)
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.exists():
                raise
        shutil.rmtree(staging, ignore_errors=True)
    return final
