"""Serving benchmark (not a test): `hsops serve` under load on 127.0.0.1, beside
`mlflow models serve` on the same model.

The server is the real CLI in its own process group; the load comes from a second
process (asyncio, raw HTTP/1.1 keep-alive connections, no JSON parsing of answers, so
the client costs little CPU on a 2-core machine). Descriptions are sampled from the
customs declarations corpus.

1. Cold start: `hsops serve` spawn to first answered request, and one replica's spawn
   to ready (its own "replica ready" log line), several times.
2. Open loop at 10, 50 and 200 requests/s of single descriptions (default replicas,
   1 to 2): p50/p99/p99.9 measured from each request's scheduled send time, so a slow
   answer delays no later request's clock (no coordinated omission).
3. Closed loop on two replicas: N clients, each sending its next request when the last
   is answered, for several N and request sizes (1 description, micro-batched by the
   server, and 32 or 256 per request); the best sustainable throughput.
4. RSS of every replica (from /proc), idle and after load.
5. A soak of single descriptions in open loop at the sustainable rate (the highest of
   80/60/40/20 % of the closed-loop best that holds in open loop): errors, latency per
   time window, RSS growth per replica, and what the replicas measured themselves.
6. `mlflow models serve` (pyfunc wrapping the same Predictor, 2 uvicorn workers): cold
   start, the same closed-loop sweep, p99 at 50 requests/s, and the ratios. mlflow.pyfunc
   needs pandas, which hsops does not: it is installed once into a folder beside the
   venv (``<venv>/bench-extras``) and put on that server's PYTHONPATH only.

The model is ``--model`` (default champion) of ``--home`` (default HSOPS_HOME or
~/.hsops), served from a throwaway home beside it, so the run's prediction log and
logs do not land in the user's. Run with `make bench-serving`, or
`python benchmarks/bench_serving.py --quick` (a few seconds per step, written to
serving.quick.json/.md). Writes benchmarks/results/serving.json and serving.md. Run it
on a quiet machine: the servers and the load generator share its cores.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGETS = {"p99_ms_at_50rps": 10.0, "descriptions_per_s": 5000.0, "cold_start_s": 1.0,
           "rss_mb_per_replica": 300.0, "soak_memory_growth_pct": 10.0, "mlflow_ratio": 5.0}
OPEN_RATES = (10, 50, 200)
# closed loop: (descriptions per request, concurrent clients to try)
SWEEP = ((1, (1, 4, 16, 64, 256)), (32, (1, 4, 16, 64)), (256, (1, 2, 4, 8)))
# pinned so the comparison is repeatable; installed beside the venv, not into it (the
# serving stack does not need pandas, mlflow.pyfunc cannot import without it)
MLFLOW_EXTRAS = ("pandas==3.1.1", "python-dateutil==2.9.0.post0", "six==1.17.0")
MB = 1e6


# == the load generator (runs in its own process) =============================================
class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time; only the status line and
    Content-Length of an answer are read."""

    def __init__(self, loop):
        self.loop, self.transport, self.buf, self.future, self.alive = loop, None, b"", None, True
        self.header_end, self.length, self.close_after = -1, 0, False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if self.header_end < 0:
            self.header_end = self.buf.find(b"\r\n\r\n")
            if self.header_end < 0:
                return
            head = self.buf[:self.header_end].lower() + b"\r\n"
            at = head.find(b"content-length:")
            self.length = int(head[at + 15:head.find(b"\r\n", at)]) if at >= 0 else 0
            # without a length (chunked) the answer's end is unknown: use the connection once
            self.close_after = b"connection: close" in head or at < 0
        if len(self.buf) >= self.header_end + 4 + self.length:
            status = int(self.buf[9:12])
            self.buf, self.header_end = b"", -1
            if self.close_after:  # a draining replica: this connection ends here
                self.alive = False
                self.transport.close()
            if self.future is not None and not self.future.done():
                self.future.set_result(status)

    def connection_lost(self, exc):
        self.alive = False
        if self.future is not None and not self.future.done():
            self.future.set_result(0)  # 0: the connection failed

    async def request(self, payload: bytes, timeout: float) -> int:
        self.future = self.loop.create_future()
        self.transport.write(payload)
        timer = self.loop.call_later(timeout, self._timeout)
        try:
            return await self.future
        finally:
            timer.cancel()

    def _timeout(self):
        self.alive = False
        self.transport.close()
        if not self.future.done():
            self.future.set_result(-1)  # -1: no answer in time


class _Records:
    """Per request: send time (s from the phase start; the scheduled time in open loop),
    latency (s) and HTTP status (0 connection failed, -1 timed out). Open loop also keeps
    how late each request started against its schedule (the generator's own lag) and the
    most requests in flight at once."""

    def __init__(self):
        self.t, self.latency, self.status = array.array("d"), array.array("d"), array.array("i")
        self.lag, self.in_flight, self.peak_in_flight = array.array("d"), 0, 0

    def add(self, t, latency, status):
        self.t.append(t)
        self.latency.append(latency)
        self.status.append(status)


async def _connect(port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _Connection(loop), "127.0.0.1", port)
    return conn


async def _send(conn: _Connection | None, port: int, payload: bytes, timeout: float) -> tuple:
    """``(connection to reuse or None, status)``: on ``conn`` if it is still open, else on
    a new one; a refused connection is status 0."""
    try:
        if conn is None or not conn.alive:
            conn = await _connect(port)
        return conn, await conn.request(payload, timeout)
    except OSError:
        return None, 0


async def _open_loop(port, payloads, rate, seconds, timeout, max_connections=2000) -> _Records:
    """Requests at fixed times start + i / rate, whatever the answers do; a request with no
    idle connection opens one (up to ``max_connections``, then it waits for one, and the
    wait counts in its latency)."""
    loop = asyncio.get_running_loop()
    records, tasks = _Records(), set()
    pool = asyncio.LifoQueue()  # live connections come back on top; None = a free slot to open
    for _ in range(max_connections):
        pool.put_nowait(None)
    start = loop.time() + 0.05

    async def fire(i, scheduled):
        records.lag.append(loop.time() - scheduled)
        records.in_flight += 1
        records.peak_in_flight = max(records.peak_in_flight, records.in_flight)
        conn, status = await _send(await pool.get(), port, payloads[i % len(payloads)], timeout)
        records.add(scheduled - start, loop.time() - scheduled, status)
        records.in_flight -= 1
        pool.put_nowait(conn if conn is not None and conn.alive else None)

    n = int(rate * seconds)
    i = 0
    while i < n:
        now = loop.time()
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < n and start + i / rate <= now:  # everything due now (a late wake-up fires a burst)
            task = loop.create_task(fire(i, start + i / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
    if tasks:
        await asyncio.wait(list(tasks))
    await _drain_pool(pool)
    return records


async def _closed_loop(port, payloads, concurrency, seconds, timeout) -> _Records:
    """``concurrency`` clients, each sending its next request as soon as it has an answer."""
    loop = asyncio.get_running_loop()
    records = _Records()
    start = loop.time()
    end = start + seconds

    async def client(k):
        conn, i = None, k
        while loop.time() < end:
            sent = loop.time()
            conn, status = await _send(conn, port, payloads[i % len(payloads)], timeout)
            if status == 0:
                await asyncio.sleep(0.01)  # a refused connection must not spin
            records.add(sent - start, loop.time() - sent, status)
            i += concurrency
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return records


async def _drain_pool(pool):
    while not pool.empty():
        conn = pool.get_nowait()
        if conn is not None and conn.transport is not None:
            conn.transport.close()


def _payloads(texts: list[str], api: str, port: int, size: int) -> list[bytes]:
    """Ready-to-send requests of ``size`` descriptions each, cycling through ``texts``."""
    path = "/v1/predict" if api == "hsops" else "/invocations"
    key = "descriptions" if api == "hsops" else "inputs"  # mlflow: type-hinted pyfunc input
    out = []
    for at in range(0, max(len(texts) - size + 1, 1), size):
        body = json.dumps({key: texts[at:at + size]}).encode()
        out.append(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


def _generator_main(conn) -> None:
    """The load generator process: receives the texts, then one job at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops this process
    texts = conn.recv()
    cache: dict = {}
    while (job := conn.recv()) is not None:
        key = (job["api"], job["port"], job["size"])
        if key not in cache:
            cache = {key: _payloads(texts, *key)}
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if job["mode"] == "open":
            coro = _open_loop(job["port"], cache[key], job["rate"], job["seconds"], job["timeout"])
        else:
            coro = _closed_loop(job["port"], cache[key], job["concurrency"], job["seconds"], job["timeout"])
        records = asyncio.run(coro)
        conn.send({"t": records.t, "latency": records.latency, "status": records.status, "lag": records.lag,
                   "peak_in_flight": records.peak_in_flight, "client_cpu_s": time.process_time() - cpu0,
                   "wall_s": time.perf_counter() - wall0})


class LoadGenerator:
    def __init__(self, texts: list[str]):
        ctx = multiprocessing.get_context("spawn")  # a clean process: no copy of this one's state
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_generator_main, args=(child,), name="hsops-bench-load", daemon=True)
        self.proc.start()
        self.conn.send(texts)

    def run(self, on_tick=None, **job) -> dict:
        """Run one job; ``on_tick()`` is called about every second while it runs."""
        job.setdefault("timeout", 30.0)
        self.conn.send(job)
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise RuntimeError("the load generator died")
            if on_tick is not None:
                on_tick()
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# == measuring ==================================================================================
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summarize(run: dict, size: int, skip_s: float = 0.0, until_s: float | None = None) -> dict:
    """Latency percentiles (ms, answered requests), errors by status, throughput; requests
    sent before ``skip_s`` (warm-up) or at/after ``until_s`` are left out."""
    rows = [(t, lat, st) for t, lat, st in zip(run["t"], run["latency"], run["status"])
            if t >= skip_s and (until_s is None or t < until_s)]
    ok = [lat for _, lat, st in rows if st == 200]
    errors: dict[str, int] = {}
    for _, _, st in rows:
        if st != 200:
            name = {0: "connection", -1: "timeout"}.get(st, str(st))
            errors[name] = errors.get(name, 0) + 1
    span = (max(t + lat for t, lat, _ in rows) - min(t for t, _, _ in rows)) if rows else 0.0
    ms = lambda v: None if v is None else round(1000 * v, 2)  # noqa: E731
    out = {"requests": len(rows), "errors": sum(errors.values()), "errors_by_status": errors,
           "p50_ms": ms(percentile(ok, 0.5)), "p99_ms": ms(percentile(ok, 0.99)),
           "p999_ms": ms(percentile(ok, 0.999)), "max_ms": ms(max(ok) if ok else None),
           "descriptions_per_s": round(len(ok) * size / span, 1) if span else 0.0,
           "requests_per_s": round(len(rows) / span, 1) if span else 0.0,
           "client_cpu_s": round(run["client_cpu_s"], 2)}
    if run["lag"]:  # open loop: is the generator keeping its schedule?
        out.update(generator_lag_p99_ms=ms(percentile(list(run["lag"]), 0.99)), peak_in_flight=run["peak_in_flight"])
    return out


def proc_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def proc_descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = proc_children(todo.pop())
        out += kids
        todo += kids
    return out


def proc_group(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    return None


def proc_memory(pid: int) -> dict:
    """Resident and peak resident memory (MB) of a process, from /proc."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = int(line.split()[1]) * 1024 / MB
    return {"rss_mb": round(values.get("VmRSS", 0), 1), "peak_rss_mb": round(values.get("VmHWM", 0), 1)}


def proc_cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict, timeout: float = 60.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def scrape(port: int, names: tuple[str, ...]) -> dict:
    """Sums over their labels of the named samples of ``GET /metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name, value = line.split("{")[0].split(" ")[0], line.rsplit(" ", 1)[-1]
        if name in out:
            out[name] += float(value)
    return out


_SERVER = ("hsops_batch_size_requests_sum", "hsops_batch_size_requests_count", "hsops_batch_size_descriptions_sum",
           "hsops_request_duration_seconds_sum", "hsops_request_duration_seconds_count",
           "hsops_queue_wait_seconds_sum", "hsops_queue_wait_seconds_count", "hsops_shed_requests_total")


def server_side(before: dict, after: dict) -> dict:
    """What the replicas measured between two scrapes: requests merged per model call,
    mean time inside the app and waiting for the model, requests shed."""
    d = {k: after[k] - before[k] for k in _SERVER}
    div = lambda a, b, scale=1.0: round(scale * d[a] / d[b], 2) if d[b] else None  # noqa: E731
    return {"requests_per_model_call": div("hsops_batch_size_requests_sum", "hsops_batch_size_requests_count"),
            "descriptions_per_model_call": div("hsops_batch_size_descriptions_sum", "hsops_batch_size_requests_count"),
            "app_mean_ms": div("hsops_request_duration_seconds_sum", "hsops_request_duration_seconds_count", 1000),
            "queue_wait_mean_ms": div("hsops_queue_wait_seconds_sum", "hsops_queue_wait_seconds_count", 1000),
            "shed": int(d["hsops_shed_requests_total"])}


class Server:
    """A server command started in its own process group, stopped by PID even on error:
    SIGTERM to the command (``hsops serve`` drains its replicas), then SIGKILL to
    whatever of its descendants is left."""

    def __init__(self, command: list[str], env: dict, log: Path, port: int, path: str, body: dict, marker: str):
        self.port, self.log, self.marker = port, log, marker  # marker: in the command line of its workers
        started = time.perf_counter()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.known: set[int] = set()
        try:
            self.first_answer_s = self._first_answer(path, body, started)
        except BaseException:
            self.stop()
            raise

    def _first_answer(self, path: str, body: dict, started: float, timeout: float = 180.0) -> float:
        """Seconds from spawn to the first 200 (a connection refused means not bound yet)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.proc.args[:4]} exited with {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(ConnectionError, OSError, http.client.HTTPException):
                if post(self.port, path, body) == 200:
                    return time.perf_counter() - started
            time.sleep(0.005)
        raise RuntimeError(f"no answer on port {self.port} within {timeout:.0f} s; see {self.log}")

    def workers(self, marker: str) -> list[int]:
        """PIDs of the descendants whose command line contains ``marker``."""
        pids = []
        for pid in proc_descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    pids.append(pid)
        self.known.update(pids)
        return pids

    def stop(self, grace: float = 40.0) -> None:
        self.known.update(proc_descendants(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.known:  # replicas or workers that outlived their parent
            if proc_group(pid) == self.proc.pid:  # still ours (its group), not a reused PID
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def hsops_serve(home: Path, work: Path, *extra: str, all_ready: bool = False) -> Server:
    """`hsops serve` (the installed command) on a free port; with ``all_ready``, also wait
    until it says it serves, which it does once its minimum of replicas is ready."""
    port = free_port()
    env = {**os.environ, "HSOPS_HOME": str(home), "COLUMNS": "200"}
    cli = Path(sys.executable).parent / "hsops"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "hsops.cli"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), *extra]
    log = work / f"serve-{port}.out"
    server = Server(command, env, log, port, "/v1/predict", {"descriptions": ["cotton t-shirts"]},
                    "hsops.platform.local.replica")
    deadline = time.monotonic() + 120
    while all_ready and "serving " not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


def replica_stats(server: Server) -> dict:
    return {str(pid): {**proc_memory(pid), "cpu_s": proc_cpu_s(pid)} for pid in server.workers(server.marker)}


# == the steps ==================================================================================
def serving_home(home: Path, ref: str, work: Path) -> tuple[Path, dict]:
    """A throwaway HSOPS_HOME serving only ``ref``'s artifact (linked, not copied), so the
    prediction log, jobs and serving logs of the run do not land in the user's home."""
    from hsops.registry.index import resolve, write_index

    resolved = resolve(home, ref)
    target = work / "home"
    (target / "artifacts").mkdir(parents=True)
    (target / "artifacts" / resolved.artifact_dir.name).symlink_to(resolved.artifact_dir.resolve())
    info = {**resolved.info, "artifact": f"artifacts/{resolved.artifact_dir.name}"}
    write_index(target, {"models": {resolved.name: {"versions": {resolved.version: info},
                                                    "aliases": {"champion": resolved.version}}}})
    if (home / "serving.json").is_file():  # the user's serving settings apply to the run
        shutil.copy(home / "serving.json", target / "serving.json")
    model = {"ref": ref, "label": resolved.label, "kind": info.get("kind"),
             "artifact_mb": round(sum(p.stat().st_size for p in resolved.artifact_dir.iterdir()) / MB, 1)}
    return target, model


def sample_descriptions(n: int) -> list[str]:
    """``n`` descriptions of the corpus (those the API accepts: ≤ 2000 characters, with
    a letter or digit), in a fixed random order."""
    from hsops._config import corpus_path
    from hsops.data.readers import read_table

    corpus = corpus_path()
    if corpus is None:
        sys.exit("the customs declarations corpus is needed (HSOPS_DATA_HOME or ../shared/data)")
    texts = [r.text for r in read_table(corpus) if r.problem is None and isinstance(r.text, str)
             and len(r.text) <= 2000 and any(ch.isalnum() for ch in r.text)]
    random.Random(0).shuffle(texts)
    return texts[:n]


def cold_starts(home: Path, work: Path, repetitions: int) -> dict:
    """`hsops serve` spawn → first answered request; the replica's spawn → ready as it logs it."""
    log = home / "logs" / "serving.log"
    cli, replica = [], []
    for _ in range(repetitions):
        offset = log.stat().st_size if log.exists() else 0
        server = hsops_serve(home, work)
        try:
            cli.append(server.first_answer_s)
        finally:
            server.stop()
        with open(log, "rb") as f:
            f.seek(offset)
            for line in f:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("message") == "replica ready":
                        replica.append(entry["cold_start_ms"] / 1000)
    med = lambda v: round(statistics.median(v), 3) if v else None  # noqa: E731
    return {"repetitions": repetitions, "serve_s": [round(v, 3) for v in cli], "serve_p50_s": med(cli),
            "serve_max_s": round(max(cli), 3), "replica_s": [round(v, 3) for v in replica],
            "replica_p50_s": med(replica), "replica_max_s": round(max(replica), 3) if replica else None}


def open_loop(gen: LoadGenerator, port: int, api: str, rates, seconds: float) -> dict:
    gen.run(api=api, port=port, size=1, mode="open", rate=50, seconds=2)  # warm-up, not counted
    out = {}
    for rate in rates:
        out[str(rate)] = summarize(gen.run(api=api, port=port, size=1, mode="open", rate=rate, seconds=seconds), 1)
        print(f"  open loop {rate}/s: {out[str(rate)]}", flush=True)
    return out


def closed_sweep(gen: LoadGenerator, server: Server, api: str, seconds: float, p99_bound_ms: float,
                 sweep=SWEEP) -> dict:
    """Every (size, concurrency) point; sustainable = no error and p99 ≤ the bound; the
    best sustainable point by descriptions/s. Per point also the CPU seconds each server
    process used (how the load spread over replicas) and, for hsops, the server's metrics."""
    warm = min(1.0, seconds / 4)
    points = []
    for size, concurrencies in sweep:
        for concurrency in concurrencies:
            cpu0 = {pid: proc_cpu_s(pid) for pid in server.workers(server.marker)}
            before = scrape(server.port, _SERVER) if api == "hsops" else None
            run = gen.run(api=api, port=server.port, size=size, mode="closed", concurrency=concurrency,
                          seconds=seconds + warm)
            point = {"size": size, "concurrency": concurrency, **summarize(run, size, skip_s=warm),
                     "server_cpu_s": sorted((round(proc_cpu_s(pid) - c, 1) for pid, c in cpu0.items()), reverse=True)}
            if before is not None:  # the whole point, warm-up included
                point.update(server_side(before, scrape(server.port, _SERVER)))
            point["sustainable"] = point["errors"] == 0 and (point["p99_ms"] or 1e9) <= p99_bound_ms
            points.append(point)
            print(f"  closed size {size} x{concurrency}: {point['descriptions_per_s']:.0f} desc/s, "
                  f"p99 {point['p99_ms']} ms, errors {point['errors']}, server CPU s {point['server_cpu_s']}",
                  flush=True)
    ok = [p for p in points if p["sustainable"]]
    best = max(ok, key=lambda p: p["descriptions_per_s"]) if ok else None
    best_by_size = {str(size): max((p for p in ok if p["size"] == size), key=lambda p: p["descriptions_per_s"],
                                   default=None) for size, _ in sweep}
    return {"points": points, "best": best, "best_by_size": best_by_size}


def soak_rate(gen: LoadGenerator, server: Server, closed_best: float, seconds: float, bound_ms: float) -> dict:
    """The sustainable open-loop rate of single descriptions: the first of 80, 60, 40, 20 %
    of the best closed-loop rate with no error and p99 ≤ the bound, for ``seconds`` each
    (a closed loop slows its clients down when the server does; an open loop does not,
    so its sustainable rate can be lower)."""
    trials = []
    for fraction in (0.8, 0.6, 0.4, 0.2):
        rate = fraction * closed_best
        r = summarize(gen.run(api="hsops", port=server.port, size=1, mode="open", rate=rate, seconds=seconds), 1)
        trials.append({"fraction": fraction, "rate_per_s": round(rate, 1), **{k: r[k] for k in (
            "errors", "p50_ms", "p99_ms", "peak_in_flight")}})
        print(f"  trial {rate:.0f}/s: p99 {r['p99_ms']} ms, errors {r['errors']}", flush=True)
        if r["errors"] == 0 and (r["p99_ms"] or 1e9) <= bound_ms:
            return {"rate_per_s": rate, "trials": trials}
        time.sleep(2)  # let the backlog of a failed trial clear
    return {"rate_per_s": 0.2 * closed_best, "trials": trials}


def soak(gen: LoadGenerator, server: Server, rate: float, seconds: float) -> dict:
    """Single descriptions in open loop at ``rate`` for ``seconds``: errors, latency per
    tenth of the run, RSS of each replica at start and end (sampled every few seconds),
    and what the server measured itself."""
    start_stats = replica_stats(server)
    metrics0 = scrape(server.port, _SERVER)
    samples = [(0.0, {pid: s["rss_mb"] for pid, s in start_stats.items()})]
    t0 = time.monotonic()
    last = [t0]

    def tick():
        if time.monotonic() - last[0] >= max(1.0, seconds / 30):
            last[0] = time.monotonic()
            samples.append((round(last[0] - t0, 1), {pid: s["rss_mb"] for pid, s in replica_stats(server).items()}))

    run = gen.run(tick, api="hsops", port=server.port, size=1, mode="open", rate=rate, seconds=seconds)
    end_stats = replica_stats(server)
    server_metrics = server_side(metrics0, scrape(server.port, _SERVER))
    windows = []
    width = seconds / 10
    for k in range(10):
        w = summarize(run, 1, skip_s=k * width, until_s=(k + 1) * width)
        windows.append({"from_s": round(k * width, 1), **{key: w[key] for key in (
            "requests", "errors", "p50_ms", "p99_ms", "p999_ms", "max_ms")}})
    replicas = {}
    for pid in sorted(set(start_stats) | set(end_stats)):
        a, b = start_stats.get(pid, {}).get("rss_mb"), end_stats.get(pid, {}).get("rss_mb")
        replicas[pid] = {"rss_start_mb": a, "rss_end_mb": b, "peak_rss_mb": end_stats.get(pid, {}).get("peak_rss_mb"),
                         "growth_pct": round(100 * (b - a) / a, 1) if a and b else None}
    return {"rate_per_s": round(rate, 1), "seconds": seconds, **summarize(run, 1), "windows": windows,
            "replicas": replicas, "replicas_replaced": set(start_stats) != set(end_stats),
            "server": server_metrics, "rss_samples": samples}


def mlflow_serve(artifact_ref: Path, work: Path, gen: LoadGenerator, args, bound: float) -> dict:
    """The same Predictor as an MLflow pyfunc behind `mlflow models serve --env-manager
    local`, measured like ours; raises with the reason when it cannot run here."""
    extras = Path(sys.prefix) / "bench-extras" / "mlflow-serve"
    if not (extras / "pandas").is_dir():
        print(f"installing {', '.join(MLFLOW_EXTRAS)} for mlflow.pyfunc into {extras} ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--no-deps", "--target", str(extras), *MLFLOW_EXTRAS],
                              capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(extras, ignore_errors=True)
            raise RuntimeError("mlflow.pyfunc needs pandas, which is not installed and could not be: "
                               + (done.stderr.strip().splitlines() or ["pip failed"])[-1])
    # the extras for this server only; the venv's bin first: mlflow starts `uvicorn` by name
    joined = lambda *parts: os.pathsep.join(p for p in parts if p)  # noqa: E731
    env = {**os.environ, "PYTHONPATH": joined(str(extras), os.environ.get("PYTHONPATH")),
           "PATH": joined(str(Path(sys.executable).parent), os.environ.get("PATH"))}
    code = work / "hsops_pyfunc.py"
    code.write_text(_PYFUNC)
    model_dir = work / "mlflow-model"
    saved = subprocess.run([sys.executable, "-W", "ignore", "-c", _SAVE, str(model_dir), str(code), str(artifact_ref)],
                           env=env, capture_output=True, text=True)
    if saved.returncode != 0:
        raise RuntimeError(f"mlflow.pyfunc.save_model failed: {saved.stderr.strip()[-1500:]}")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "2"]
    # uvicorn's workers are spawned by multiprocessing: that is all their command lines say
    server = Server(command, env, work / "mlflow.out", port, "/invocations", {"inputs": ["cotton t-shirts"]},
                    "spawn_main")
    try:
        result = {"command": "mlflow models serve --env-manager local -w 2 (uvicorn, 2 workers)",
                  "cold_start_s": round(server.first_answer_s, 3)}
        result["open_loop"] = open_loop(gen, port, "mlflow", (50,), args.open_seconds)
        result["closed_loop"] = closed_sweep(gen, server, "mlflow", args.point_seconds, bound)
        result["workers_after_load"] = {str(p): proc_memory(p) for p in server.workers(server.marker)}
    finally:
        server.stop()
    return result


_PYFUNC = '''"""The hsops Predictor as an MLflow pyfunc (models from code: nothing pickled)."""
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class HsopsPredictor(PythonModel):
    def load_context(self, context):
        from hsops.serving.predictor import Predictor

        self.predictor = Predictor.from_dir(context.artifacts["model"], "mlflow")

    def predict(self, model_input: list[str], params=None) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.predictor.predict(model_input, top_k=5)]


mlflow.models.set_model(HsopsPredictor())
'''
_SAVE = "import sys, mlflow.pyfunc; mlflow.pyfunc.save_model(sys.argv[1], python_model=sys.argv[2], " \
        "artifacts={'model': sys.argv[3]})"


# == report =====================================================================================
def verdicts(result: dict) -> list[dict]:
    t, out = result["targets"], []

    def add(name, value, target, met, gap):
        out.append({"target": name, "value": value, "goal": target, "met": met, "gap": gap})

    p99 = (result.get("open_loop") or {}).get("50", {}).get("p99_ms")
    if p99 is not None:
        add("p99 at 50 requests/s", f"{p99} ms", f"≤ {t['p99_ms_at_50rps']:g} ms", p99 <= t["p99_ms_at_50rps"],
            f"{p99 - t['p99_ms_at_50rps']:+.2f} ms")
    best = (result.get("closed_loop") or {}).get("best")
    if best is not None or "closed_loop" in result:
        value = best["descriptions_per_s"] if best else 0.0
        add("descriptions/s with batching, 2 cores", f"{value:,.0f}", f"≥ {t['descriptions_per_s']:,.0f}",
            value >= t["descriptions_per_s"], f"{100 * (value / t['descriptions_per_s'] - 1):+.0f} %")
    cold = result.get("cold_start")
    if cold:
        for label, key in (("cold start, `hsops serve` spawn → first answer (p50)", "serve_p50_s"),
                           ("cold start, one replica spawn → ready (p50)", "replica_p50_s")):
            if cold.get(key) is not None:
                add(label, f"{cold[key]:.2f} s", f"≤ {t['cold_start_s']:g} s", cold[key] <= t["cold_start_s"],
                    f"{cold[key] - t['cold_start_s']:+.2f} s")
    rss = [r["rss_mb"] for phase in ("after_open_loop", "after_closed_loop") for r in
           (result.get("replicas") or {}).get(phase, {}).values()]
    rss += [r["rss_end_mb"] or 0 for r in (result.get("soak") or {}).get("replicas", {}).values()]
    if rss:
        add("RSS per replica after load (max)", f"{max(rss):.0f} MB", f"≤ {t['rss_mb_per_replica']:g} MB",
            max(rss) <= t["rss_mb_per_replica"], f"{max(rss) - t['rss_mb_per_replica']:+.0f} MB")
        peak = max(r["peak_rss_mb"] for phase in (result.get("replicas") or {}).values() for r in phase.values())
        add("RSS per replica, peak (VmHWM)", f"{peak:.0f} MB",
            f"≤ {t['rss_mb_per_replica']:g} MB", peak <= t["rss_mb_per_replica"],
            f"{peak - t['rss_mb_per_replica']:+.0f} MB")
    s = result.get("soak")
    if s:
        growth = max((r["growth_pct"] for r in s["replicas"].values() if r["growth_pct"] is not None), default=None)
        add("soak errors", str(s["errors"]), "0", s["errors"] == 0, f"{s['errors']:+d}")
        if growth is not None:
            add("soak memory growth (max over replicas)", f"{growth:.1f} %", f"< {t['soak_memory_growth_pct']:g} %",
                growth < t["soak_memory_growth_pct"], f"{growth - t['soak_memory_growth_pct']:+.1f} points")
    ratio = (result.get("comparison") or {}).get("throughput_ratio")
    if ratio is not None:
        add("throughput vs mlflow models serve", f"{ratio:.1f}×", f"≥ {t['mlflow_ratio']:g}×",
            ratio >= t["mlflow_ratio"], f"{ratio - t['mlflow_ratio']:+.1f}×")
    return out


def _ms(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def write_markdown(result: dict, path: Path) -> None:
    m, model = result["machine"], result["model"]
    lines = [f"# Serving benchmark ({result['date']}{', quick run' if result['quick'] else ''})", "",
             f"Machine: {m['cpu_count']} cores, {m['memory_gib']} GiB, Python {m['python']}. "
             f"Model {model['label']} ({model['kind']}, artifact {model['artifact_mb']} MB). "
             f"{result['descriptions']:,} descriptions sampled from the corpus; load from a second process "
             "(asyncio, HTTP/1.1 keep-alive) on 127.0.0.1, sharing the cores with the server. "
             "Latency from the scheduled send time in open loop; MB = 10^6 bytes.", "", "## Targets", "",
             "| target | measured | goal | met | gap |", "|---|---:|---:|---|---:|"]
    lines += [f"| {v['target']} | {v['value']} | {v['goal']} | {'met' if v['met'] else '**missed**'} | {v['gap']} |"
              for v in result["verdicts"]]
    if "open_loop" in result:
        lines += ["", "## Open loop, single descriptions (default replicas: 1 to 2)", "",
                  f"{result['open_seconds']:g} s per rate.", "",
                  "| requests/s | requests | p50 ms | p99 ms | p99.9 ms | max ms | errors | generator lag p99 ms |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rate, r in result["open_loop"].items():
            lines.append(f"| {rate} | {r['requests']} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {_ms(r['p999_ms'])} "
                         f"| {_ms(r['max_ms'])} | {r['errors']} | {_ms(r['generator_lag_p99_ms'])} |")
        lines += ["", "Generator lag: how late the load generator started a request against its schedule "
                      "(included in the latency)."]
    if "closed_loop" in result:
        c = result["closed_loop"]
        lines += ["", "## Closed loop on 2 replicas (`--min-replicas 2 --max-replicas 2`)", "",
                  f"{result['point_seconds']:g} s per point after a warm-up. Sustainable: no error (no 429/503, "
                  f"timeout or connection failure) and p99 ≤ {result['p99_bound_ms']:g} ms.", "",
                  "| descriptions/request | clients | descriptions/s | p50 ms | p99 ms | errors | requests/model call "
                  "| CPU s per replica | sustainable |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for p in c["points"]:
            lines.append(f"| {p['size']} | {p['concurrency']} | {p['descriptions_per_s']:,.0f} | {_ms(p['p50_ms'])} "
                         f"| {_ms(p['p99_ms'])} | {p['errors']} | {p.get('requests_per_model_call') or '–'} "
                         f"| {' / '.join(f'{v:g}' for v in p['server_cpu_s'])} "
                         f"| {'yes' if p['sustainable'] else 'no'} |")
        lines += ["", "CPU s per replica: CPU time each replica used during the point, largest first; a "
                      "replica at 0 beside a busy one means every client connection landed on the busy one."]
        if c["best"]:
            b = c["best"]
            lines += ["", f"Best sustainable: **{b['descriptions_per_s']:,.0f} descriptions/s** with {b['size']} "
                          f"per request and {b['concurrency']} clients (p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms)."]
    cold = result.get("cold_start")
    if cold:
        lines += ["", "## Cold start", "", f"{cold['repetitions']} starts of `hsops serve` (default replicas).", "",
                  "| measure | p50 | max |", "|---|---:|---:|",
                  f"| `hsops serve` spawn → first answered request | {cold['serve_p50_s']} s "
                  f"| {cold['serve_max_s']} s |",
                  f"| one replica spawn → ready (model loaded, listening) | {cold['replica_p50_s']} s "
                  f"| {cold['replica_max_s']} s |"]
    reps = result.get("replicas")
    if reps:
        lines += ["", "## Memory per replica", "", "| when | replica PID | RSS MB | peak RSS MB |",
                  "|---|---:|---:|---:|"]
        for phase, entries in reps.items():
            for pid, r in entries.items():
                lines.append(f"| {phase.replace('_', ' ')} | {pid} | {r['rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    s = result.get("soak")
    if s:
        trials = ", ".join(f"{t['rate_per_s']:g}/s p99 {t['p99_ms']} ms, {t['errors']} errors"
                           for t in s["rate_trials"])
        sv = s["server"]
        lines += ["", "## Soak", "", f"Single descriptions in open loop at {s['rate_per_s']:g} requests/s for "
                  f"{s['seconds']:g} s on 2 replicas: {s['requests']:,} requests, {s['errors']} errors, "
                  f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, p99.9 {s['p999_ms']} ms."
                  + (" **A replica was replaced during the soak.**" if s["replicas_replaced"] else ""), "",
                  f"The rate: the first of 80/60/40/20 % of the best closed-loop single-description rate that held "
                  f"in open loop with no error and p99 ≤ {result['p99_bound_ms']:g} ms ({trials}). "
                  f"Measured by the replicas meanwhile: {sv['app_mean_ms']} ms mean inside the app, "
                  f"{sv['queue_wait_mean_ms']} ms mean wait for the model, {sv['requests_per_model_call']} requests "
                  f"per model call, {sv['shed']} shed.", "",
                  "| from s | requests | errors | p50 ms | p99 ms | p99.9 ms | max ms |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for w in s["windows"]:
            lines.append(f"| {w['from_s']:g} | {w['requests']} | {w['errors']} | {_ms(w['p50_ms'])} "
                         f"| {_ms(w['p99_ms'])} "
                         f"| {_ms(w['p999_ms'])} | {_ms(w['max_ms'])} |")
        lines += ["", "| replica PID | RSS at start MB | RSS at end MB | growth | peak MB |",
                  "|---:|---:|---:|---:|---:|"]
        for pid, r in s["replicas"].items():
            lines.append(f"| {pid} | {r['rss_start_mb']} | {r['rss_end_mb']} | {r['growth_pct']} % "
                         f"| {r['peak_rss_mb']} |")
    ml = result.get("mlflow")
    if ml is not None:
        lines += ["", "## Beside `mlflow models serve`", ""]
        if "error" in ml:
            lines.append(f"Not measured: {ml['error']}")
        else:
            cmp = result["comparison"]
            mb = ml["closed_loop"]["best"]
            lines += [f"The same Predictor wrapped as an MLflow pyfunc (models from code, `inputs` JSON), "
                      f"served by `{ml['command']}`.", "",
                      "| measure | hsops serve | mlflow models serve | ratio (> 1: hsops better) |",
                      "|---|---:|---:|---:|",
                      f"| best sustainable descriptions/s | {cmp['hsops_best_per_s']:,.0f} | "
                      f"{cmp['mlflow_best_per_s']:,.0f} | {_ratio(cmp['throughput_ratio'])} |"]
            for size, (ours, theirs, ratio) in cmp["by_size"].items():
                lines.append(f"| ... {size} per request | {ours:,.0f} | {theirs:,.0f} | {_ratio(ratio)} |")
            lines += [f"| p99 at 50 requests/s | {_ms(cmp['hsops_p99_at_50_ms'])} ms "
                      f"| {_ms(cmp['mlflow_p99_at_50_ms'])} ms "
                      f"| {_ratio(cmp['p99_ratio'])} |",
                      f"| cold start, spawn → first answer | {_ms(cmp['hsops_cold_start_s'])} s | "
                      f"{_ms(cmp['mlflow_cold_start_s'])} s | {_ratio(cmp['cold_start_ratio'])} |"]
            if mb:
                lines += ["", f"MLflow's best: {mb['size']} per request, {mb['concurrency']} clients "
                              f"(p99 {mb['p99_ms']} ms). Its closed-loop points, measured like ours:", "",
                          "| descriptions/request | clients | descriptions/s | p50 ms | p99 ms | errors "
                          "| CPU s per worker |",
                          "|---:|---:|---:|---:|---:|---:|---:|"]
                for p in ml["closed_loop"]["points"]:
                    lines.append(f"| {p['size']} | {p['concurrency']} | {p['descriptions_per_s']:,.0f} | "
                                 f"{_ms(p['p50_ms'])} | {_ms(p['p99_ms'])} | {p['errors']} "
                                 f"| {' / '.join(f'{v:g}' for v in p['server_cpu_s'])} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _ratio(value) -> str:
    return "–" if value is None else f"{value:.1f}×"


def compare(result: dict) -> dict:
    ours, theirs = result["closed_loop"], result["mlflow"]["closed_loop"]
    rate = lambda best: best["descriptions_per_s"] if best else 0.0  # noqa: E731
    div = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    by_size = {size: (rate(ours["best_by_size"].get(size)), rate(theirs["best_by_size"].get(size)),
                      div(rate(ours["best_by_size"].get(size)), rate(theirs["best_by_size"].get(size))))
               for size in ours["best_by_size"]}
    p99_ours = result["open_loop"]["50"]["p99_ms"]
    p99_theirs = result["mlflow"]["open_loop"]["50"]["p99_ms"]
    return {"hsops_best_per_s": rate(ours["best"]), "mlflow_best_per_s": rate(theirs["best"]),
            "throughput_ratio": div(rate(ours["best"]), rate(theirs["best"])), "by_size": by_size,
            "hsops_p99_at_50_ms": p99_ours, "mlflow_p99_at_50_ms": p99_theirs, "p99_ratio": div(p99_theirs, p99_ours),
            "hsops_cold_start_s": result["cold_start"]["serve_p50_s"],
            "mlflow_cold_start_s": result["mlflow"]["cold_start_s"],
            "cold_start_ratio": div(result["mlflow"]["cold_start_s"], result["cold_start"]["serve_p50_s"])}


# == main =======================================================================================
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="HSOPS_HOME with the model (default: "
                        "HSOPS_HOME or ~/.hsops); the run serves a copy of its registry entry, writes nothing there")
    parser.add_argument("--model", default="champion", help="alias or NAME@VERSION to serve")
    parser.add_argument("--train", action="store_true", help="no model under --model: train the linear "
                        "baseline on the corpus into --home first (`hsops train`, a few minutes)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per step, for development; "
                        "writes serving.quick.json/.md")
    parser.add_argument("--soak-seconds", type=float, default=None, help="default 300 (10 with --quick)")
    parser.add_argument("--p99-bound-ms", type=float, default=250.0, help="closed loop: sustainable only "
                        "with p99 at or under this")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    args.open_seconds = 3.0 if args.quick else 20.0
    args.point_seconds = 2.0 if args.quick else 10.0
    soak_seconds = args.soak_seconds or (10.0 if args.quick else 300.0)
    # a SIGTERM (make interrupted, a CI timeout) ends the run through the cleanup below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from hsops._config import hsops_home
    from hsops.registry.index import ModelNotFound, resolve

    if args.home is not None:
        os.environ["HSOPS_HOME"] = str(args.home)
    home = hsops_home()
    try:
        resolve(home, args.model)
    except ModelNotFound as exc:
        if not args.train:
            sys.exit(f"nothing to serve in {home}: {exc}\nTrain a model first (`hsops train --data <corpus>`, or "
                     "`make bench-models`), point --home at a home that has one, or pass --train.")
        from hsops._config import corpus_path

        print(f"training the linear baseline into {home} ...", flush=True)
        subprocess.run([sys.executable, "-m", "hsops.cli", "train", "--data", str(corpus_path()), "--alias",
                        "champion"], check=True, env={**os.environ, "HSOPS_HOME": str(home)})
    texts = sample_descriptions(4000 if args.quick else 20000)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-", dir=home))
    result = {"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "machine": machine(), "targets": TARGETS,
              "descriptions": len(texts), "open_seconds": args.open_seconds, "point_seconds": args.point_seconds,
              "p99_bound_ms": args.p99_bound_ms}
    gen = None
    try:
        serve_home, result["model"] = serving_home(home, args.model, work)
        gen = LoadGenerator(texts)
        print("cold start ...", flush=True)
        result["cold_start"] = cold_starts(serve_home, work, 2 if args.quick else 5)
        print(f"  {result['cold_start']}", flush=True)

        print("open loop, default replicas ...", flush=True)
        server = hsops_serve(serve_home, work)
        try:
            result["replicas"] = {"idle": {pid: {k: s[k] for k in ("rss_mb", "peak_rss_mb")}
                                           for pid, s in replica_stats(server).items()}}
            result["open_loop"] = open_loop(gen, server.port, "hsops", OPEN_RATES, args.open_seconds)
            result["replicas"]["after_open_loop"] = {pid: {k: s[k] for k in ("rss_mb", "peak_rss_mb")}
                                                     for pid, s in replica_stats(server).items()}
        finally:
            server.stop()

        print("closed loop and soak, 2 replicas ...", flush=True)
        server = hsops_serve(serve_home, work, "--min-replicas", "2", "--max-replicas", "2", all_ready=True)
        try:
            result["closed_loop"] = closed_sweep(gen, server, "hsops", args.point_seconds, args.p99_bound_ms)
            result["replicas"]["after_closed_loop"] = {pid: {k: s[k] for k in ("rss_mb", "peak_rss_mb")}
                                                       for pid, s in replica_stats(server).items()}
            single = result["closed_loop"]["best_by_size"].get("1")
            if single:
                print("soak rate ...", flush=True)
                calibration = soak_rate(gen, server, single["descriptions_per_s"], args.point_seconds,
                                        args.p99_bound_ms)
                print(f"soak {soak_seconds:g} s at {calibration['rate_per_s']:.0f}/s ...", flush=True)
                result["soak"] = {**soak(gen, server, calibration["rate_per_s"], soak_seconds),
                                  "rate_trials": calibration["trials"]}
                print(f"  {({k: v for k, v in result['soak'].items() if k not in ('windows', 'rss_samples')})}",
                      flush=True)
        finally:
            server.stop()

        if not args.skip_mlflow:
            print("mlflow models serve ...", flush=True)
            try:
                artifact = (serve_home / "artifacts").iterdir().__next__().resolve()
                result["mlflow"] = mlflow_serve(artifact, work, gen, args, args.p99_bound_ms)
                result["comparison"] = compare(result)
            except Exception as exc:  # noqa: BLE001 - the reason is the result
                result["mlflow"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  {result.get('comparison') or result['mlflow']}", flush=True)
    finally:
        if gen is not None:
            gen.close()
        shutil.rmtree(work, ignore_errors=True)
    result["verdicts"] = verdicts(result)
    RESULTS.mkdir(exist_ok=True)
    name = "serving.quick" if args.quick else "serving"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_markdown(result, RESULTS / f"{name}.md")
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the servers were stopped on the way out
        sys.exit("interrupted")
