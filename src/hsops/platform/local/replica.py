"""A serving replica process: ``python -m hsops.platform.local.replica --fd N --slot S ...``.

Started by the replica supervisor (``platform.local.replicas``) with the listening
socket inherited as file descriptor ``N``. It loads the model before it announces
itself ready (so a cold start is spawn to first answerable request), serves until it
is drained, then flushes the prediction log and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("hsops.serving.replica")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hsops-replica")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--scoreboard", required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--ref", default="champion")
    parser.add_argument("--config", default="{}", help="serving config overrides as JSON")
    parser.add_argument("--pipelines", action="store_true")
    args = parser.parse_args(argv)
    spawned = float(os.environ.get("HSOPS_REPLICA_SPAWNED", time.time()))

    from hsops.serving.config import load_config
    from hsops.serving.logs import configure_logging

    config = load_config(Path(args.home), json.loads(args.config))
    configure_logging(json_logs=config.json_logs)
    # uvicorn re-raises the stop signal after its shutdown; with these handlers in place
    # that re-raise is harmless and the cleanup below runs
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)

    from hsops.platform.local.server import ServingRuntime
    from hsops.serving.replica_server import serve_on_socket
    from hsops.serving.scoreboard import Scoreboard

    board = Scoreboard(Path(args.scoreboard), args.slots)
    board.write(args.slot, pid=os.getpid(), started=spawned, heartbeat=time.time())
    runtime = ServingRuntime(Path(args.home), args.ref, config=config, pipelines=args.pipelines).start()
    sock = socket.socket(fileno=args.fd)

    def ready() -> None:
        board.write(args.slot, ready=1, heartbeat=time.time())
        log.info("replica ready", extra={"slot": args.slot, "pid": os.getpid(),
                                         "cold_start_ms": round(1000 * (time.time() - spawned), 1)})

    try:
        serve_on_socket(runtime.app, sock, runtime.app.state.serving, board=board, slot=args.slot,
                        drain_seconds=config.replicas.drain_seconds, on_ready=ready)
    finally:
        board.write(args.slot, ready=0)
        runtime.stop()
        board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
