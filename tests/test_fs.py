import os
import subprocess
import sys

from hsops._fs import file_lock, staging_dir, sweep_stale

KILLED_WRITER = """
import os, signal, sys
from hsops._fs import staging_dir
d = staging_dir(sys.argv[1])
(d / "model.json").write_text("{half")
print(d, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_staging_left_by_a_killed_writer_is_swept(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -9
    left = tmp_path / os.path.basename(proc.stdout.strip())
    assert left.is_dir()
    mine = staging_dir(tmp_path)  # the next writer cleans up after the dead one
    assert not left.exists() and mine.is_dir()
    assert sweep_stale(tmp_path) == []  # our own (live) staging folder is kept
    assert mine.is_dir()


def test_folders_that_are_not_staging_are_never_swept(tmp_path):
    (tmp_path / "abc123").mkdir()
    (tmp_path / ".staging-notapid").mkdir()
    sweep_stale(tmp_path)
    assert (tmp_path / "abc123").is_dir() and (tmp_path / ".staging-notapid").is_dir()


HOLDER = """
import sys
from hsops._fs import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_file_lock_excludes_another_process(tmp_path):
    import fcntl

    import pytest

    lock = tmp_path / "registry" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with open(lock, "a") as handle:
            with pytest.raises(BlockingIOError):
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        with file_lock(lock):  # free again once the holder is gone
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
