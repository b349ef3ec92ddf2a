"""A serving replica's HTTP server: uvicorn on a listening socket shared with the other
replicas, a heartbeat into the supervisor's scoreboard, and a graceful drain.

Drain, in order, when the replica is told to stop (SIGTERM or the scoreboard's drain
flag): stop accepting connections (the shared socket stays open in the other
replicas, so new connections go to them), answer every response with ``Connection:
close`` for ``predrain_s`` so keep-alive clients move elsewhere, then let uvicorn
finish the requests in flight (up to ``drain_seconds``) and exit. A request that
reached this replica is answered; none is cut off.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from hsops.serving import metrics
from hsops.serving.middleware import ServingState
from hsops.serving.scoreboard import Scoreboard, resident_bytes

log = logging.getLogger("hsops.serving.replica")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServingState, *, predrain_s: float = 1.0):
        super().__init__(config)
        self.state = state
        self.predrain_s = predrain_s
        self.drain_requested = False
        self._drain_started: float | None = None

    def handle_exit(self, sig, frame) -> None:
        # a signal handler must not touch the event loop: only note the request here
        if self.drain_requested:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's own (forced) exit
        self.drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_requested and self._drain_started is None:
            self._drain_started = time.monotonic()
            self.state.draining = True
            for server in getattr(self, "servers", []):
                server.close()  # no new connections here; the other replicas take them
            log.info("draining: %d requests in flight", self.state.in_flight)
        if self._drain_started is not None and time.monotonic() - self._drain_started >= self.predrain_s:
            return True
        return await super().on_tick(counter)


class Balance:
    """Each replica's CPU share over the last heartbeat, from the scoreboard; how many of
    this replica's clients to move (``Connection: close``) when it is much busier than
    another ready replica. A client told to close reconnects, and the connection is
    accepted by whichever replica's event loop is free first: the idle one."""

    BUSY = 0.5  # CPU share under which a replica is not worth unloading

    def __init__(self, board: Scoreboard, slot: int):
        self.board, self.slot = board, slot
        self._last: dict[int, tuple[float, float, int]] = {}  # slot -> (time, cpu seconds, pid)

    def shares(self, now: float) -> dict[int, float]:
        out = {}
        for slot in range(self.board.slots):
            entry = self.board.read(slot)
            if not entry.pid or not entry.ready or entry.drain:
                self._last.pop(slot, None)
                continue
            last = self._last.get(slot)
            if last is not None and last[2] == entry.pid and now > last[0]:
                out[slot] = max(0.0, (entry.cpu_seconds - last[1]) / (now - last[0]))
            self._last[slot] = (now, entry.cpu_seconds, entry.pid)
        return out

    def to_move(self, now: float, in_flight: int) -> int:
        shares = self.shares(now)
        mine = shares.pop(self.slot, 0.0)
        if mine < self.BUSY or not shares:
            return 0
        least = min(shares.values())
        if least > mine / 2:
            return 0
        # move about the share of clients that would even the two out
        return max(1, min(16, round(in_flight * (mine - least) / (2 * mine))))


def heartbeat(board: Scoreboard, slot: int, state: ServingState, batcher, server: DrainingServer,
              stop: threading.Event, interval: float = 0.25) -> None:
    """Write this replica's numbers into its slot until ``stop``; obey the drain flag;
    move clients to a much less busy replica."""
    last_rss = 0.0
    balance = Balance(board, slot)
    while not stop.wait(interval):
        entry = board.read(slot)
        if entry.drain and not server.drain_requested:
            server.drain_requested = True
        now = time.monotonic()
        values = {"heartbeat": time.time(), "busy_seconds": batcher.busy_seconds, "queued": batcher.queued,
                  "in_flight": state.in_flight, "requests": batcher.calls, "cpu_seconds": time.process_time()}
        if now - last_rss > 2.0:
            rss = resident_bytes()
            values["rss_bytes"] = rss
            metrics.REPLICA_RSS.set(rss)
            last_rss = now
        board.write(slot, **values)
        if not state.draining:
            state.close_next = max(state.close_next, balance.to_move(now, state.in_flight))


def serve_on_socket(app, sock: socket.socket, state: ServingState, *, drain_seconds: float,
                    board: Scoreboard | None = None, slot: int = 0, on_ready=None) -> None:
    """Run ``app`` on ``sock`` until drained. ``on_ready`` is called once uvicorn listens."""
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=drain_seconds, timeout_keep_alive=30)
    server = DrainingServer(config, state)
    stop = threading.Event()
    beat = None
    if board is not None:
        batcher = app.state.batcher
        beat = threading.Thread(target=heartbeat, args=(board, slot, state, batcher, server, stop),
                                name="hsops-heartbeat", daemon=True)

    def announce() -> None:
        while not server.started and not stop.is_set():
            time.sleep(0.01)
        if server.started:
            metrics.REPLICAS.set(1)
            if on_ready is not None:
                on_ready()

    threading.Thread(target=announce, name="hsops-ready", daemon=True).start()
    if beat is not None:
        beat.start()
    try:
        server.run(sockets=[sock])
    finally:
        stop.set()
        metrics.REPLICAS.set(0)
