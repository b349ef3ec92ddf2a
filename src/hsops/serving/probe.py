"""Serving cost of an artifact: load it in a fresh process, as a serving replica would,
time it, and turn the timings into Lambda cost per million predictions.

Shared by the pipeline's evaluate step (the gate weighs cost) and the benchmarks, so a
"cost per million" means the same thing everywhere. A fresh process because the caller
(a training worker, a benchmark) has torch and the training stack resident, which a
replica does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hsops._pricing import invocation_cost_usd, lambda_memory_mb

_PROBE = """
import json, statistics, sys, time
def peak_rss_mib():
    # VmHWM is this process's own high-water mark; ru_maxrss survives exec and would
    # report the parent's training peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]
t0 = time.perf_counter()
from hsops.serving.predictor import Predictor
p = Predictor.from_dir(sys.argv[1], "bench")
load_s = time.perf_counter() - t0
texts = json.load(sys.stdin)
p.predict(texts[:8])
single, raw = [], []
# different texts for the two loops: a model that caches its last inputs must not be
# timed on a cache hit
half = len(texts) // 2
for t, u in zip(texts[:min(half, 500)], texts[half:half + 500]):
    s = time.perf_counter(); p.model.predict_proba([t]); raw.append(time.perf_counter() - s)
    s = time.perf_counter(); p.predict([u]); single.append(time.perf_counter() - s)
batches = []
for start in range(0, min(len(texts), 256 * 8), 256):
    s = time.perf_counter(); p.predict(texts[start:start + 256]); batches.append(time.perf_counter() - s)
s = time.perf_counter(); p.predict(texts); all_s = time.perf_counter() - s
s = time.perf_counter(); p.predict(texts[:20], explain=True); explain_s = (time.perf_counter() - s) / 20
print(json.dumps({"cold_load_s": load_s,
    "single_p50_ms": 1000 * statistics.median(single), "single_p99_ms": 1000 * pct(single, 0.99),
    "model_only_p50_ms": 1000 * statistics.median(raw), "model_only_p99_ms": 1000 * pct(raw, 0.99),
    "batch256_ms": 1000 * statistics.median(batches),
    "throughput_per_s": len(texts) / all_s, "explain_ms": 1000 * explain_s,
    "peak_rss_mib": peak_rss_mib(),
    "heavy_modules": sorted(m for m in ("torch", "mlflow", "pandas", "sklearn") if m in sys.modules)}))
"""


def serving_probe(artifact_dir: Path, texts: list[str]) -> dict:
    """Load the Predictor for ``artifact_dir`` in a fresh process and time it on ``texts``:
    one description at a time (through the Predictor, and the model alone), batches of
    256, the whole list in one call, explanations; plus cold load and peak RSS."""
    out = subprocess.run([sys.executable, "-c", _PROBE, str(artifact_dir)], input=json.dumps(texts),
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"serving probe of {artifact_dir} failed: {tail}")
    return json.loads(out.stdout)


def cost_per_million(serving: dict) -> dict:
    """USD per million predictions on Lambda, memory sized from the probe's peak RSS:
    one description per request (p50), and per description in batches of 256."""
    memory = lambda_memory_mb(serving["peak_rss_mib"])
    one = invocation_cost_usd(serving["single_p50_ms"] / 1000, memory)
    batched = invocation_cost_usd(serving["batch256_ms"] / 1000, memory) / 256
    return {"lambda_memory_mb": memory, "one_line_per_request": round(one * 1e6, 3),
            "batches_of_256": round(batched * 1e6, 4)}
