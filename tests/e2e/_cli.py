"""The real ``hsops`` command in a child process, with its own HSOPS_HOME."""

import os
import subprocess
import sys

HSOPS = [sys.executable, "-m", "hsops.cli"]


def run(args, home, check=True):
    env = {**os.environ, "HSOPS_HOME": str(home)}
    proc = subprocess.run(HSOPS + args, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"hsops {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc
