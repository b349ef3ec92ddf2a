"""Pipeline benchmark (not a test): the local platform end to end on the real corpus.

1. Executor overhead per state transition: a chain of Pass states on the SQLite journal
   (what every run pays) and on the in-memory one (the interpreter alone).
2. Function runtime: warm invocation round trip, and the cold start after the workers
   scaled to zero (process spawn to ready, and invoke to result).
3. File drop to challenger: a platform (`LocalPlatform`, as `hsops up` starts it) in a
   fresh HSOPS_HOME. An older 60 % of the corpus is dropped first and becomes the
   champion; then the full corpus is dropped, and the clock runs from the file landing
   in the inbox to the challenger alias moving. Reported with each state's duration,
   peak memory and cost, and the gate's numbers.

Writes benchmarks/results/pipeline.json and pipeline.md. Timings are wall-clock on this
machine; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PASS_CHAIN = 200


def executor_overhead(work: Path) -> dict:
    from hsops._sqlite import SqliteDatabase
    from hsops.platform.local.asl import Interpreter, MemoryJournal, SqliteJournal

    states = {f"S{i}": {"Type": "Pass", "Next": f"S{i + 1}"} for i in range(PASS_CHAIN - 1)}
    states[f"S{PASS_CHAIN - 1}"] = {"Type": "Succeed"}
    definition = {"StartAt": "S0", "States": states}
    out = {}
    for label, journal_of in (("sqlite", lambda i: SqliteJournal(SqliteDatabase(work / "bench.db"), f"e{i}")),
                              ("memory", lambda i: MemoryJournal())):
        times = []
        for i in range(5):
            journal = journal_of(i)
            started = time.perf_counter()
            Interpreter(definition, lambda *a, **k: None, journal).run({"x": 1})
            times.append((time.perf_counter() - started) / PASS_CHAIN)
        out[f"{label}_ms_per_transition"] = round(1000 * statistics.median(times), 3)
    # a replay of a finished execution (what a resumed run does for its finished steps)
    journal = SqliteJournal(SqliteDatabase(work / "bench.db"), "e0")
    started = time.perf_counter()
    Interpreter(definition, lambda *a, **k: None, journal).run({"x": 1})
    out["sqlite_replay_ms_per_transition"] = round(1000 * (time.perf_counter() - started) / PASS_CHAIN, 3)
    return out


def runtime_round_trips(work: Path) -> dict:
    from hsops.platform.local.backend import LocalBackend

    functions = {"hsops-echo": "hsops.pipeline.diagnostics:echo"}
    backend = LocalBackend(work / "runtime-home", functions=functions, max_workers=1, idle_timeout=1.0)
    backend.start()
    try:
        cold = []
        for _ in range(5):
            deadline = time.monotonic() + 30
            while backend.functions.stats()["workers"] and time.monotonic() < deadline:
                time.sleep(0.1)  # scaled to zero: the next call is a cold start
            started = time.perf_counter()
            invocation = backend.functions.call("hsops-echo", {"n": 1}, timeout=60)
            cold.append({"invoke_to_result_ms": 1000 * (time.perf_counter() - started),
                         "init_ms": invocation.init_ms, "cold_start": invocation.cold_start})
        warm = []
        for i in range(30):
            started = time.perf_counter()
            backend.functions.call("hsops-echo", {"n": i}, timeout=60)
            warm.append(1000 * (time.perf_counter() - started))
    finally:
        backend.close()
    return {"cold_starts": len([c for c in cold if c["cold_start"]]),
            "cold_init_ms_p50": round(statistics.median(c["init_ms"] or 0 for c in cold), 1),
            "cold_invoke_to_result_ms_p50": round(statistics.median(c["invoke_to_result_ms"] for c in cold), 1),
            "warm_invoke_to_result_ms_p50": round(statistics.median(warm), 1),
            "warm_invoke_to_result_ms_max": round(max(warm), 1)}


def split_corpus(corpus: Path, work: Path, share: float) -> tuple[Path, Path]:
    """(an older ``share`` of the corpus, all of it) as CSV files of description and code."""
    with gzip.open(corpus, "rt", encoding="utf-8", newline="") as f:
        rows = [(r["goods_description"], r["hs_code"]) for r in csv.DictReader(f)]
    random.Random(0).shuffle(rows)
    paths = []
    for name, part in (("declarations-older.csv", rows[: int(share * len(rows))]), ("declarations-all.csv", rows)):
        path = work / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["goods_description", "hs_code"])
            writer.writerows(part)
        paths.append(path)
    return paths[0], paths[1]


def drop_and_wait(platform, home: Path, path: Path, timeout: float) -> tuple[float, object]:
    """Move ``path`` into the inbox; seconds until its run ends, and the run."""
    machines = platform.backend.state_machines
    before = {e.id for e in machines.list(limit=1000)}
    staged = home / f".{path.name}.part"
    shutil.copy(path, staged)
    started = time.perf_counter()
    os.replace(staged, home / "inbox" / path.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [e for e in machines.list(limit=1000) if e.id not in before]
        if new and new[0].status in ("SUCCEEDED", "FAILED"):
            return time.perf_counter() - started, new[0]
        time.sleep(0.5)
    raise SystemExit(f"{path.name}: no finished run after {timeout:.0f} s")


def file_drop_to_challenger(corpus: Path, work: Path, candidates: list[dict], timeout: float) -> dict:
    from hsops.platform.local.platform import LocalPlatform

    home = work / "platform-home"
    home.mkdir()
    (home / "pipeline.json").write_text(json.dumps({"candidates": candidates}))
    older, full = split_corpus(corpus, work, 0.6)
    platform = LocalPlatform(home, port=None, max_workers=2, idle_timeout=30.0).start()
    try:
        print("dropping the older 60% (becomes the champion) ...", flush=True)
        first_s, first = drop_and_wait(platform, home, older, timeout)
        print(f"  {first.status} in {first_s:.0f} s: {first.output or first.cause}", flush=True)
        print("dropping the full corpus (the challenger) ...", flush=True)
        second_s, second = drop_and_wait(platform, home, full, timeout)
        print(f"  {second.status} in {second_s:.0f} s: {second.output or second.cause}", flush=True)
        history = platform.backend.state_machines.history(second.id)
        stats = platform.backend.functions.stats()
    finally:
        platform.stop()
    decision = next((h for h in history if h["state"] == "Compare"), None)
    compare = None
    if decision:
        from hsops.platform.local.asl import SqliteJournal
        from hsops.platform.local.backend import LocalBackend

        backend = LocalBackend(home)
        step = SqliteJournal(backend.db, second.id).get(decision["key"])
        # a step's journaled output is the state's output: the decision sits at its ResultPath
        result = ((step.output or {}).get("comparison") or {}).get("decision") or {} if step else {}
        compare = {"reason": result.get("reason"), "improvement_points": result.get("improvement_points"),
                   "cost_per_million_usd": result.get("cost_per_million_usd"),
                   "best": {k: result.get("best", {}).get(k) for k in ("kind", "metrics")},
                   "champion": {k: (result.get("champion") or {}).get(k) for k in ("version", "metrics")}}
        backend.close()
    by_state: dict[str, dict] = {}
    for h in history:
        entry = by_state.setdefault(h["state"], {"runs": 0, "seconds": 0.0, "cost_usd": 0.0, "peak_memory_mb": 0})
        entry["runs"] += 1
        entry["seconds"] += (h["duration_ms"] or 0) / 1000
        entry["cost_usd"] += h["cost_usd"] or 0
        entry["peak_memory_mb"] = max(entry["peak_memory_mb"], h.get("peak_memory_mb") or 0)
    return {"candidates": candidates, "bootstrap_run": {"seconds": round(first_s, 1), "status": first.status,
                                                        "output": first.output},
            "drop_to_challenger_seconds": round(second_s, 1), "status": second.status, "output": second.output,
            "error": second.error, "cause": second.cause, "run_cost_usd": second.cost_usd,
            "by_state": {k: {**v, "seconds": round(v["seconds"], 2), "cost_usd": round(v["cost_usd"], 8)}
                         for k, v in by_state.items()},
            "gate": compare, "runtime_stats": stats}


def write_markdown(result: dict, path: Path) -> None:
    m, ex, rt = result["machine"], result["executor"], result["runtime"]
    lines = [f"# Pipeline benchmark ({result['date']})", "",
             f"Machine: {m['cpu_count']} cores, {m['memory_gib']} GiB, Python {m['python']}.", "",
             "## Executor and runtime", "", "| measure | value |", "|---|---|",
             f"| executor overhead per state transition (SQLite journal) | {ex['sqlite_ms_per_transition']} ms |",
             f"| ... interpreter alone (in-memory journal) | {ex['memory_ms_per_transition']} ms |",
             f"| ... replaying a finished step on resume | {ex['sqlite_replay_ms_per_transition']} ms |",
             f"| worker cold start, spawn to ready (p50) | {rt['cold_init_ms_p50']} ms |",
             f"| cold invocation, invoke to result (p50) | {rt['cold_invoke_to_result_ms_p50']} ms |",
             f"| warm invocation, invoke to result (p50 / max) | {rt['warm_invoke_to_result_ms_p50']} / "
             f"{rt['warm_invoke_to_result_ms_max']} ms |", ""]
    drop = result.get("drop")
    if drop:
        lines += ["## File drop to challenger, full corpus", "",
                  f"Candidates: {', '.join(c['kind'] + (' (up-sampled)' if c.get('upsample') else '') for c in drop['candidates'])}. "
                  f"Bootstrap (older 60 % → champion): {drop['bootstrap_run']['seconds']} s. "
                  f"Full corpus dropped → {drop['status']}: **{drop['drop_to_challenger_seconds']} s**, "
                  f"run cost ${drop['run_cost_usd']:.6f}.", ""]
        if drop.get("gate"):
            lines += [f"Gate: {drop['gate']['reason']}.", ""]
        lines += ["| state | runs | seconds | peak memory | cost (USD) |", "|---|---:|---:|---:|---:|"]
        for state, v in drop["by_state"].items():
            memory = f"{v['peak_memory_mb']:.0f} MB" if v["peak_memory_mb"] else ""
            lines.append(f"| {state} | {v['runs']} | {v['seconds']:.2f} | {memory} | {v['cost_usd']:.8f} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-drop", action="store_true", help="only the executor and runtime measures")
    parser.add_argument("--candidates", default="linear+up,svc",
                        help="comma-separated kinds for the drop run; '+up' up-samples")
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args()
    from hsops._config import corpus_path, hsops_home

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=hsops_home()))
    try:
        result = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
        result["executor"] = executor_overhead(work)
        print("executor:", result["executor"], flush=True)
        result["runtime"] = runtime_round_trips(work)
        print("runtime:", result["runtime"], flush=True)
        if not args.skip_drop:
            corpus = corpus_path()
            if corpus is None:
                sys.exit("the customs declarations corpus is needed (HSOPS_DATA_HOME or ../shared/data)")
            candidates = [{"kind": c.removesuffix("+up"), **({"upsample": True} if c.endswith("+up") else {})}
                          for c in args.candidates.split(",")]
            result["drop"] = file_drop_to_challenger(corpus, work, candidates, args.timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_markdown(result, RESULTS / "pipeline.md")
    print((RESULTS / "pipeline.md").read_text())


if __name__ == "__main__":
    main()
