"""Baseline benchmark (not a test): accuracy, training time, model size, prediction
latency and throughput, memory, and cost per million predictions, on the real corpus.

Run with `make bench`. Writes benchmarks/results/baseline.json and baseline.md.
Timings are wall-clock on this machine; the machine is described in the output.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, serving_probe  # noqa: E402

from hsops._pricing import LAMBDA_GB_SECOND_USD, LAMBDA_REQUEST_USD  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    from hsops._config import corpus_path

    corpus = corpus_path()
    if corpus is None:
        sys.exit("the customs declarations corpus is needed (HSOPS_DATA_HOME or ../shared/data)")
    from hsops._config import hsops_home

    home = Path(tempfile.mkdtemp(prefix="bench-", dir=hsops_home()))  # removed at the end
    try:
        run(corpus, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(corpus: Path, home: Path) -> None:
    from hsops.data.datasets import load_dataset
    from hsops.data.ingest import ingest_file
    from hsops.training.train import train

    report = ingest_file(corpus, home)
    dataset = load_dataset(home, report.dataset_version)
    started = time.perf_counter()
    result = train(dataset, home)
    total_train_s = time.perf_counter() - started
    test_texts, _ = dataset.part("test")
    serving = serving_probe(result.artifact_dir, test_texts)
    size = sum(p.stat().st_size for p in result.artifact_dir.iterdir())
    # cost of one prediction on Lambda at 1 GB memory, billed per request of one line
    # (p50 compute time) and per line in batches of 256
    gb = 1.0
    cost_single = (serving["single_p50_ms"] / 1000) * gb * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD
    cost_batched = ((serving["batch256_ms"] / 1000) * gb * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD) / 256
    out = {
        "machine": machine(), "dataset_version": dataset.version, "model": "linear",
        "params": result.params,
        "train_rows": len(dataset.part("train")[0]), "test_rows": len(test_texts),
        "fit_seconds": round(result.train_seconds, 1), "train_calibrate_export_seconds": round(total_train_s, 1),
        "training_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "artifact_mib": round(size / 2**20, 1), "test_metrics": result.test_metrics,
        "serving": serving,
        "cost_per_million_usd": {"one_line_per_request": round(cost_single * 1e6, 2),
                                 "batches_of_256": round(cost_batched * 1e6, 3)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "baseline.json").write_text(json.dumps(out, indent=2, default=str))
    m, s = result.test_metrics, serving
    lines = [
        "# Linear baseline on the customs declarations corpus", "",
        f"Machine: {out['machine']}. Dataset {dataset.version}: {out['train_rows']:,} train rows, "
        f"{out['test_rows']:,} test rows (group-aware split).", "",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {100 * m[k]:.1f}% |" for k in ("hs6_top1", "hs6_top5", "hs4_top1", "hs2_top1", "macro_f1",
                                                     "coverage_at_target", "accuracy_at_target")],
        f"| abstention threshold (dev, 90% target) | {m['threshold']:.3f} |",
        f"| fit time | {out['fit_seconds']} s |",
        f"| train + calibrate + export | {out['train_calibrate_export_seconds']} s |",
        f"| training peak RSS | {out['training_peak_rss_mib']} MiB |",
        f"| artifact size | {out['artifact_mib']} MiB |",
        f"| serving cold load (import + verify + load) | {s['cold_load_s']:.2f} s |",
        f"| one description p50 / p99 | {s['single_p50_ms']:.2f} / {s['single_p99_ms']:.2f} ms |",
        f"| batch of 256 | {s['batch256_ms']:.0f} ms |",
        f"| throughput (one process, whole test split in one call) | {s['throughput_per_s']:,.0f} lines/s |",
        f"| serving peak RSS | {s['peak_rss_mib']:.0f} MiB |",
        f"| heavy modules loaded by serving | {s['heavy_modules'] or 'none'} |",
        f"| Lambda cost per million, one line per request (1 GB) | ${out['cost_per_million_usd']['one_line_per_request']} |",
        f"| Lambda cost per million, batches of 256 (1 GB) | ${out['cost_per_million_usd']['batches_of_256']} |",
    ]
    (RESULTS / "baseline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
