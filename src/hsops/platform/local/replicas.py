"""The replica supervisor: serving processes that scale with load, between a minimum and
a maximum, on one port.

The supervisor binds the port once and hands the listening socket to every replica
process (``platform.local.replica``), the way gunicorn does: the kernel gives each new
connection to whichever replica accepts first, so adding a replica adds capacity with
no proxy in front. Each replica reports through a shared scoreboard
(``serving.scoreboard``); every ``tick`` seconds the supervisor:

* restarts a replica that died (with a growing delay if it keeps dying);
* adds one when the replicas' mean utilisation (model-thread busy share) or their
  queued work stayed above ``scale_up_utilization`` for ``scale_up_after_s``;
* drains and stops the newest when it stayed below ``scale_down_utilization`` for
  ``scale_down_after_s``, never under ``min`` (drain: ``serving.replica_server``).

Replicas write Prometheus samples into one folder (multiprocess mode), so ``/metrics``
on any replica reports them all. ``stop()`` drains every replica.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hsops.serving.config import ServingConfig, load_config
from hsops.serving.scoreboard import Scoreboard

log = logging.getLogger("hsops.serving.supervisor")


@dataclass
class _Replica:
    slot: int
    proc: subprocess.Popen
    spawned: float  # time.time()
    cold_start_s: float | None = None
    draining: bool = False
    last_busy: float = 0.0
    last_cpu: float = 0.0
    last_seen: float = field(default_factory=time.monotonic)
    utilization: float = 0.0


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class ReplicaSupervisor:
    def __init__(self, home: Path, *, ref: str = "champion", host: str = "127.0.0.1", port: int = 8000,
                 config: ServingConfig | None = None, overrides: dict | None = None, pipelines: bool = False,
                 tick: float = 0.5, log_file: Path | None = None):
        self.home = Path(home)
        self.ref, self.host, self.port, self.pipelines = ref, host, port, pipelines
        self.overrides = overrides or {}
        self.config = config or load_config(self.home, self.overrides)
        self.tick = tick
        self.log_file = log_file
        self.replicas: dict[int, _Replica] = {}
        self.cold_starts: list[float] = []
        self.events: list[dict] = []  # scale-ups, scale-downs, restarts (also logged)
        if not is_loopback(host) and not (self.config.auth.predict_requires_key
                                          and self.config.auth.metrics_requires_key):
            # reachable from other machines: the open-on-localhost defaults would let
            # anyone on the network predict at our cost and read the metrics
            self.overrides = {**self.overrides, "auth": {**self.overrides.get("auth", {}),
                                                         "predict_requires_key": True, "metrics_requires_key": True}}
            self.config = load_config(self.home, self.overrides)
            self.events.append({"at": time.time(), "event": "keys_required",
                                "reason": f"{host} is not a loopback address: every call needs an API key"})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._above_since: float | None = None
        self._below_since: float | None = None
        self._failures: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ReplicaSupervisor:
        r = self.config.replicas
        self._sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(2048)
        self._sock.set_inheritable(True)
        self.port = self._sock.getsockname()[1]
        self.run_dir = self.home / "run" / f"serve-{os.getpid()}-{self.port}"
        shutil.rmtree(self.run_dir, ignore_errors=True)
        (self.run_dir / "metrics").mkdir(parents=True)
        self.board = Scoreboard(self.run_dir / "scoreboard", r.max, create=True)
        for _ in range(r.min):
            self._spawn()
        self._thread = threading.Thread(target=self._loop, name="hsops-supervisor", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def ready_count(self) -> int:
        return sum(1 for rep in list(self.replicas.values())
                   if not rep.draining and self.board.read(rep.slot).ready)

    def wait_ready(self, timeout: float = 120.0, count: int | None = None) -> bool:
        deadline = time.monotonic() + timeout
        count = count or self.config.replicas.min
        while time.monotonic() < deadline:
            if self.ready_count() >= count:
                return True
            if self._stop.is_set():
                return False
            time.sleep(0.05)
        return False

    def stop(self, timeout: float | None = None) -> None:
        """Drain every replica (in-flight requests finish), then close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        timeout = self.config.replicas.drain_seconds + 5 if timeout is None else timeout
        with self._lock:
            replicas = list(self.replicas.values())
        for rep in replicas:
            self._signal(rep, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for rep in replicas:
            try:
                rep.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("replica %d did not drain in %.0fs; killing it", rep.proc.pid, timeout)
                rep.proc.kill()
                rep.proc.wait()
        if self._sock is not None:
            self._sock.close()
        self.board.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- replicas ----------------------------------------------------------------------------
    def _free_slot(self) -> int | None:
        used = {rep.slot for rep in self.replicas.values()}
        return next((s for s in range(self.config.replicas.max) if s not in used), None)

    def _spawn(self) -> _Replica | None:
        slot = self._free_slot()
        if slot is None:
            return None
        self.board.clear(slot)
        fd = self._sock.fileno()
        args = [sys.executable, "-m", "hsops.platform.local.replica", "--fd", str(fd), "--slot", str(slot),
                "--scoreboard", str(self.run_dir / "scoreboard"), "--slots", str(self.config.replicas.max),
                "--home", str(self.home), "--ref", self.ref, "--config", json.dumps(self.overrides)]
        if self.pipelines:
            args.append("--pipelines")
        spawned = time.time()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / "metrics"),
               "HSOPS_REPLICA_SPAWNED": repr(spawned), "HSOPS_HOME": str(self.home)}
        out = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(args, pass_fds=(fd,), env=env, stdout=out, stderr=out or None)
        if out is not None:
            out.close()
        rep = _Replica(slot, proc, spawned)
        with self._lock:
            self.replicas[slot] = rep
        self._event("spawn", slot=slot, pid=proc.pid, replicas=len(self.replicas))
        return rep

    def _signal(self, rep: _Replica, sig: int) -> None:
        if rep.proc.poll() is None:
            try:
                rep.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _drain(self, rep: _Replica) -> None:
        rep.draining = True
        self.board.write(rep.slot, drain=1)
        self._signal(rep, signal.SIGTERM)
        self._event("scale_down", slot=rep.slot, pid=rep.proc.pid)

    def _event(self, kind: str, **fields) -> None:
        entry = {"at": time.time(), "event": kind, **fields}
        self.events.append(entry)
        log.info("supervisor %s", kind, extra=fields)

    # -- the control loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the supervisor must keep supervising
                log.exception("supervisor step failed")

    def _step(self) -> None:
        from hsops.serving.metrics import mark_process_dead

        now = time.monotonic()
        for rep in list(self.replicas.values()):
            entry = self.board.read(rep.slot)
            if rep.cold_start_s is None and entry.ready:
                rep.cold_start_s = time.time() - rep.spawned
                self.cold_starts.append(rep.cold_start_s)
                self._event("ready", slot=rep.slot, pid=rep.proc.pid, cold_start_ms=round(1000 * rep.cold_start_s))
            dt = max(1e-6, now - rep.last_seen)
            # the busier of the model thread and the whole process: with small requests
            # the event loop (HTTP, validation) saturates before the model thread does
            model = (entry.busy_seconds - rep.last_busy) / dt
            cpu = (entry.cpu_seconds - rep.last_cpu) / dt if rep.last_cpu else 0.0
            rep.utilization = min(1.0, max(0.0, model, cpu))
            rep.last_busy, rep.last_cpu, rep.last_seen = entry.busy_seconds, entry.cpu_seconds, now
            code = rep.proc.poll()
            if code is not None:
                with self._lock:
                    self.replicas.pop(rep.slot, None)
                self.board.clear(rep.slot)
                with contextlib.suppress(OSError):
                    mark_process_dead(rep.proc.pid, str(self.run_dir / "metrics"))
                if not rep.draining and not self._stop.is_set():
                    failures = self._failures.get(rep.slot, 0) + 1
                    self._failures[rep.slot] = failures
                    self._event("restart", slot=rep.slot, pid=rep.proc.pid, exit_code=code, failures=failures)
                    if failures > 1:
                        time.sleep(min(10.0, 0.5 * 2 ** (failures - 2)))
                    self._spawn()
        self._scale(now)

    def _scale(self, now: float) -> None:
        r = self.config.replicas
        live = [rep for rep in self.replicas.values() if not rep.draining]
        ready = [rep for rep in live if rep.cold_start_s is not None]
        if not ready or len(ready) < len(live):
            self._above_since = self._below_since = None  # wait for spawned replicas to be ready
            return
        load = sum(rep.utilization for rep in ready) / len(ready)
        queued = sum(self.board.read(rep.slot).queued for rep in ready)
        pressure = max(load, 1.0 if queued > self.config.batching.max_batch * len(ready) else 0.0)
        if pressure >= r.scale_up_utilization and len(live) < r.max:
            self._below_since = None
            self._above_since = self._above_since or now
            if now - self._above_since >= r.scale_up_after_s:
                self._above_since = None
                rep = self._spawn()
                if rep is not None:
                    self._event("scale_up", slot=rep.slot, utilization=round(load, 3), queued=queued)
        elif load <= r.scale_down_utilization and len(live) > r.min:
            self._above_since = None
            self._below_since = self._below_since or now
            if now - self._below_since >= r.scale_down_after_s:
                self._below_since = None
                self._drain(max(live, key=lambda rep: rep.spawned))
        else:
            self._above_since = self._below_since = None

    def stats(self) -> dict:
        replicas = []
        for rep in sorted(self.replicas.values(), key=lambda r: r.slot):
            entry = self.board.read(rep.slot)
            replicas.append({"slot": rep.slot, "pid": rep.proc.pid, "ready": entry.ready, "draining": rep.draining,
                             "utilization": round(rep.utilization, 3), "queued": entry.queued,
                             "rss_mib": round(entry.rss_bytes / 2 ** 20, 1),
                             "cold_start_ms": round(1000 * rep.cold_start_s, 1) if rep.cold_start_s else None})
        return {"url": self.url, "replicas": replicas, "min": self.config.replicas.min,
                "max": self.config.replicas.max, "events": list(self.events[-50:])}

