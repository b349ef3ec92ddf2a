"""The local object store: one file per key under ``root``, S3's semantics on a disk.

Atomic puts: the bytes go to a temp file in the target's own folder (same file system),
are fsynced, and ``os.replace`` swaps it in, so a reader opens the old file or the new
one, never a part. Temp files are named ``.tmp-<pid>-...``; ``list`` never shows a name
starting with "." (keys cannot have one), and a put sweeps the temp files that a killed
writer left in its folder.

Metadata (sha256, size, user metadata) lives in a sidecar JSON per file *inode* under
``.meta/``: the sidecar is written before the data file is swapped in, and the rename
keeps the inode, so whichever file a reader opens, the sidecar for that inode describes
it. A file without a valid sidecar (placed by hand, or a writer killed at the wrong
moment) is hashed on read and its sidecar written then.

Unlike S3, a key cannot also be a folder: with ``a/b`` stored, ``a`` is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsops._fs import _alive
from hsops.platform.backend import (
    INBOX_PREFIX,
    OBJECT_CREATED,
    BackendError,
    EventBus,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
)

MAX_KEY_BYTES = 1024  # as S3
MAX_PART_BYTES = 255  # a file name on common file systems
MAX_METADATA_BYTES = 2048  # as S3's user metadata
TMP_PREFIX = ".tmp-"
META_DIR = ".meta"
CHUNK = 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_METADATA_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TMP_NAME = re.compile(re.escape(TMP_PREFIX) + r"(\d+)-")


def check_key(key: str) -> str:
    """``key`` if valid, else ``InvalidKey`` saying why."""
    if not isinstance(key, str):
        raise InvalidKey(f"an object key is a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("an object key cannot be empty")
    _check_path_text(key, "key")
    if key.endswith("/"):
        raise InvalidKey(f"key {key!r} ends with '/' (an empty part)")
    return key


def _check_path_text(text: str, what: str) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"{what} {text!r} is not valid UTF-8 text") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is {size} bytes; the limit is {MAX_KEY_BYTES}")
    if _CONTROL.search(text):
        raise InvalidKey(f"{what} {text!r} contains a control character (NUL, newline, ...)")
    if "\\" in text:
        raise InvalidKey(f"{what} {text!r} contains a backslash; parts are separated by '/'")
    if text.startswith("/"):
        raise InvalidKey(f"{what} {text!r} is absolute; keys are relative")
    parts = text.split("/")
    for part in parts[:-1] if text.endswith("/") else parts:
        if part in ("", ".", ".."):
            raise InvalidKey(f"{what} {text!r} has an empty, '.' or '..' part")
        if part.startswith("."):
            raise InvalidKey(f"{what} {text!r} has a part starting with '.' (reserved for temp files)")
        if len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise InvalidKey(f"{what} {text!r} has a part longer than {MAX_PART_BYTES} bytes")


def _check_metadata(metadata: dict | None) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and _METADATA_KEY.fullmatch(k) and isinstance(v, str) for k, v in metadata.items()):
        raise BackendError("metadata must map names (letters, digits, '_', '.', '-') to strings")
    size = sum(len(k.encode()) + len(v.encode("utf-8", "surrogatepass")) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise BackendError(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES} (as S3)")
    return dict(metadata)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep_temp_files(folder: Path) -> None:
    """Remove the temp files of writers that no longer run (killed mid-put)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TMP_NAME.match(entry.name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def _temp_file(folder: Path):
    """A temp file in ``folder`` opened for writing; removed unless the block renamed it."""
    for attempt in range(5):
        try:
            fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=folder)
            break
        except FileNotFoundError:  # a delete removed the folder as it emptied: make it again
            if attempt == 4:
                raise
            folder.mkdir(parents=True, exist_ok=True)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _write_atomic(path: Path, data: bytes) -> None:
    with _temp_file(path.parent) as (handle, temp):
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        os.replace(temp, path)


class LocalObjectStore(ObjectStore):
    def __init__(self, root: Path, *, events: EventBus | None = None):
        """``events``: where a put under ``inbox/`` publishes ``object.created``."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.events = events

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # -- paths and sidecars ------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta_path(self, key: str, inode: int) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / META_DIR / digest[:2] / f"{digest}.{inode}.json"

    def _remove_sidecars(self, key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        for path in self._meta_path(key, 0).parent.glob(f"{digest}.*.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _info(self, key: str, handle) -> ObjectInfo:
        """Describe the open file ``handle`` of ``key`` by its inode's sidecar, hashing
        the file (and writing the sidecar) when there is no valid one."""
        stat = os.fstat(handle.fileno())
        meta_path = self._meta_path(key, stat.st_ino)
        try:
            meta = json.loads(meta_path.read_text())
            if (meta["size"], meta["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
                return ObjectInfo(key, meta["size"], meta["sha256"], meta["modified"], meta.get("metadata", {}))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        digest = hashlib.sha256()
        handle.seek(0)
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
        info = ObjectInfo(key, stat.st_size, digest.hexdigest(), _modified(stat.st_mtime_ns))
        with contextlib.suppress(OSError):
            if os.stat(self.root / key).st_ino == stat.st_ino:  # not for a file a put replaced meanwhile
                self._write_sidecar(meta_path, info, stat.st_mtime_ns)
        return info

    def _write_sidecar(self, meta_path: Path, info: ObjectInfo, mtime_ns: int) -> None:
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"sha256": info.sha256, "size": info.size, "mtime_ns": mtime_ns,
                           "modified": info.modified, "metadata": info.metadata})
        _write_atomic(meta_path, text.encode())

    @contextlib.contextmanager
    def _open(self, key: str):
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                yield handle
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r}") from None

    # -- the contract ------------------------------------------------------------------------
    def put(self, key: str, data: bytes | str | Any, *, metadata: dict | None = None) -> ObjectInfo:
        path = self._path(key)
        metadata = _check_metadata(metadata)
        if isinstance(data, bytes | bytearray | memoryview):
            source = None
        elif isinstance(data, str | os.PathLike):
            source = Path(data)
            if not source.is_file():
                raise BackendError(f"no local file {str(source)!r} to upload (data as str is a path; "
                                   "pass bytes for content)")
        else:
            raise BackendError(f"data must be bytes or a local file path, not {type(data).__name__}")
        folder = self._make_folder(key, path.parent)
        _sweep_temp_files(folder)
        digest = hashlib.sha256()
        previous = None
        with _temp_file(folder) as (handle, temp):
            if source is None:
                digest.update(data)
                handle.write(data)
            else:
                with open(source, "rb") as src:  # streamed: a file may not fit in memory
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        digest.update(chunk)
                        handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            stat = os.fstat(handle.fileno())
            info = ObjectInfo(key, stat.st_size, digest.hexdigest(), _modified(stat.st_mtime_ns), metadata)
            # the sidecar first: once the data is swapped in, its inode is described already
            meta_path = self._meta_path(key, stat.st_ino)
            self._write_sidecar(meta_path, info, stat.st_mtime_ns)
            with contextlib.suppress(OSError):
                previous = os.stat(path).st_ino
            try:
                os.replace(temp, path)
            except IsADirectoryError:
                meta_path.unlink()
                raise InvalidKey(f"key {key!r} is a folder of other keys; a key cannot be both") from None
        _fsync_dir(folder)
        if previous is not None and previous != stat.st_ino:
            # only the sidecar of the file we replaced: another put may be writing its own now
            with contextlib.suppress(FileNotFoundError):
                self._meta_path(key, previous).unlink()
        if self.events is not None and key.startswith(INBOX_PREFIX):
            self.events.publish(OBJECT_CREATED, {"type": OBJECT_CREATED, "key": key, "size": info.size,
                                                 "sha256": info.sha256}, dedup_key=f"{key}:{info.sha256}")
        return info

    def _make_folder(self, key: str, folder: Path) -> Path:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidKey(f"key {key!r} would put a folder where an object is stored") from None
        return folder

    def get(self, key: str) -> bytes:
        with self._open(key) as handle:
            return handle.read()

    def open(self, key: str):
        """The object's file, open for reading (a later put swaps in a new inode: this
        handle keeps reading the version it opened)."""
        path = self._path(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r}") from None

    def download(self, key: str, dest: Any) -> ObjectInfo:
        dest = Path(dest)
        with self._open(key) as handle:
            dest.parent.mkdir(parents=True, exist_ok=True)
            info = self._info(key, handle)  # the open file's own description, whatever is put meanwhile
            handle.seek(0)
            digest = hashlib.sha256()
            with _temp_file(dest.parent) as (out, temp):
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                if digest.hexdigest() != info.sha256:
                    raise BackendError(f"object {key!r} does not match its recorded sha256 (changed on disk?)")
                os.replace(temp, dest)
        return info

    def head(self, key: str) -> ObjectInfo:
        with self._open(key) as handle:
            return self._info(key, handle)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        if not isinstance(prefix, str):
            raise InvalidKey(f"a prefix is a string, not {type(prefix).__name__}")
        if prefix:
            _check_path_text(prefix, "prefix")
        # walk only the deepest folder the prefix names; "inb" still matches "inbox/..."
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        infos = []
        for folder, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                key = Path(folder, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(ObjectNotFound):  # deleted while we walked
                        infos.append(self.head(key))
        return sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        self._remove_sidecars(key)
        # drop the folders it leaves empty, so their names can be keys again
        for folder in path.parents:
            if folder == self.root:
                break
            try:
                folder.rmdir()
            except OSError:
                break
        return True


def _modified(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat(timespec="milliseconds")
