"""Model zoo benchmark (not a test): every model kind, with and without stratified
up-sampling, trained on the customs declarations corpus and measured on its group-aware
test split, on the test-only sets HSCodeComp and ATLAS, and as a serving replica.

Run with `make bench-models` (all kinds, both variants, then the best model by HS6
top-1 becomes the champion) or, for example,
`python benchmarks/bench_models.py --kinds textcnn,svc --variants plain`; with `--resume`
the rows already measured on the same dataset version are kept, so an interrupted run
continues and the kinds can be measured in several runs.
Writes benchmarks/results/models.json and models.md. Models are trained and
registered in HSOPS_HOME (default ~/.hsops) through `hsops train`, each in its own
process, so each one's peak memory is its own. Timings are wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cost_per_million, machine, serving_probe  # noqa: E402

from hsops._pricing import LAMBDA_GB_SECOND_USD, LAMBDA_REQUEST_USD  # noqa: E402

RESULTS = Path(__file__).parent / "results"
NEURAL = {"dnn", "lstm", "textcnn"}
TARGETS = {"beat_baseline_by_points": 5.0, "hs6_top5": 0.93, "coverage_at_97": 0.50,
           "textcnn_p99_ms": 2.0, "textcnn_train_minutes": 10.0}
# What the system we implement reports on its own private data (accuracy, HS6 as far as
# the paper states), before and after stratified up-sampling.
PAPER = {"textcnn": (None, 0.98), "lstm": (0.92, 0.97), "dnn": (0.88, 0.95), "svc": (None, None)}


# the hsops CLI, reporting its own high-water mark of resident memory on the way out
_TRAIN_WITH_PEAK = """
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(f"PEAK_RSS_MIB={int(line.split()[1]) / 1024:.0f}", file=sys.stderr)
atexit.register(peak)
sys.argv = ["hsops", *sys.argv[1:]]
runpy.run_module("hsops.cli", run_name="__main__")
"""


def train_one(kind: str, upsample: bool, threads: int) -> dict:
    """`hsops train` in a child process; its JSON result plus the child's own peak RSS."""
    command = [sys.executable, "-c", _TRAIN_WITH_PEAK, "train", "--model", kind, "--alias", "none", "--json"]
    if upsample:
        command.append("--upsample")
    if kind in NEURAL or kind == "minilm":
        command += ["--param", f"num_threads={threads}"]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, errors = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"training {kind} (upsample={upsample}) failed:\n{errors[-3000:]}")
    result = json.loads(out)
    result["wall_seconds"] = wall
    result["peak_rss_mib"] = float(errors.rsplit("PEAK_RSS_MIB=", 1)[1].split()[0])
    return result


def external_sets(data_home: Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    """HSCodeComp and ATLAS, test only: (texts, gold codes per row; any gold counts)."""
    sets = {}
    comp = data_home / "hscodecomp" / "hscodecomp_flat.csv"
    if comp.exists():
        with comp.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        sets["HSCodeComp"] = ([r["product_name"] for r in rows], [[r["hs_code"]] for r in rows])
    atlas = data_home / "atlas_cross_rulings_sample" / "atlas_test_validation_parsed.csv"
    if atlas.exists():
        with atlas.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        sets["ATLAS"] = ([r["description"] for r in rows],
                         [[c for c in r["gold_codes"].split(";") if c.strip()] for r in rows])
    return sets


def score_external(artifact_dir: Path, sets: dict) -> dict:
    from hsops.serving.predictor import Predictor

    predictor = Predictor.from_dir(artifact_dir, "bench")
    out = {}
    for name, (texts, golds) in sets.items():
        predicted = [p.hs_code for p in predictor.predict(texts, top_k=1)]
        digits = [[("".join(ch for ch in g if ch.isdigit()) + "000000")[:6] for g in gold] for gold in golds]
        out[name] = {"n": len(texts), **{
            f"hs{level}_top1": sum(any(p[:level] == g[:level] for g in gold)
                                   for p, gold in zip(predicted, digits)) / len(texts)
            for level in (2, 4, 6)}}
    return out


def measure(kind: str, upsample: bool, threads: int, test_texts: list[str], sets: dict) -> dict:
    print(f"== {kind} {'up-sampled' if upsample else 'plain'}", flush=True)
    trained = train_one(kind, upsample, threads)
    artifact_dir = Path(trained["artifact_dir"])
    serving = serving_probe(artifact_dir, test_texts)
    row = {"kind": kind, "upsample": upsample, "version": trained["version"],
           "params": trained["params"], "test_metrics": trained["test_metrics"],
           "train_seconds": round(trained["train_seconds"], 1),
           "train_wall_seconds": round(trained["wall_seconds"], 1),
           "training_peak_rss_mib": round(trained.get("peak_rss_mib") or 0),
           "epochs_run": len(trained.get("history") or []),
           "best_epoch": max(trained.get("history") or [{}], key=lambda h: h.get("eval_top1", 0)).get("epoch"),
           "artifact_mib": round(sum(p.stat().st_size for p in artifact_dir.iterdir()) / 2**20, 1),
           "serving": serving, "cost_per_million_usd": cost_per_million(serving),
           "external": score_external(artifact_dir, sets)}
    m = row["test_metrics"]
    print(f"   hs6 top-1 {m['hs6_top1']:.3f} top-5 {m['hs6_top5']:.3f} in {row['train_seconds']} s; "
          f"p99 {serving['single_p99_ms']:.2f} ms", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="linear,svc,dnn,lstm,textcnn,minilm")
    parser.add_argument("--variants", choices=("both", "plain", "upsampled"), default="both")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for neural training")
    parser.add_argument("--promote", action="store_true", help="make the best model the champion")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already measured on this dataset version (models*.partial.json)")
    parser.add_argument("--reprobe", action="store_true",
                        help="measure serving again for the rows of --kinds kept by --resume")
    parser.add_argument("--partial-name", default="", help="suffix of this run's partial results file")
    args = parser.parse_args()

    from hsops._config import corpus_path, data_home, hsops_home
    from hsops.data.datasets import load_dataset
    from hsops.data.ingest import ingest_file
    from hsops.models.base import model_kinds
    from hsops.registry.mlflow_registry import Registry

    corpus = corpus_path()
    if corpus is None:
        sys.exit("the customs declarations corpus is needed (HSOPS_DATA_HOME or ../shared/data)")
    home = hsops_home()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in model_kinds()]
    if unknown:
        sys.exit(f"unknown model kinds {unknown}; known: {sorted(model_kinds())}")
    report = ingest_file(corpus, home)  # a no-op when this version is already stored
    dataset = load_dataset(home, report.dataset_version)
    os.environ["HSOPS_HOME"] = str(home)  # the children train into the same home
    test_texts, _ = dataset.part("test")
    sets = external_sets(data_home())
    variants = {"both": (False, True), "plain": (False,), "upsampled": (True,)}[args.variants]

    done = previous_rows(dataset.version) if args.resume else {}
    for kind in kinds:
        for upsample in variants:
            if (kind, upsample) not in done:
                done[(kind, upsample)] = measure(kind, upsample, args.threads, test_texts, sets)
                save_partial(dataset.version, done, args.partial_name)  # a crash loses one model at most
    rows = list(done.values())
    if args.reprobe:  # serving measured again, one model at a time on a quiet machine
        artifacts = {v["version"]: home / v["artifact"] for v in Registry(home).versions()}
        for row in (r for r in rows if r["kind"] in kinds):
            row["serving"] = serving_probe(artifacts[str(row["version"])], test_texts)
            row["cost_per_million_usd"] = cost_per_million(row["serving"])
        save_partial(dataset.version, done, args.partial_name)
    out = {"machine": machine(), "dataset_version": dataset.version,
           "train_rows": len(dataset.part("train")[0]), "test_rows": len(test_texts),
           "pricing": {"lambda_gb_second_usd": LAMBDA_GB_SECOND_USD,
                       "lambda_request_usd": LAMBDA_REQUEST_USD,
                       "memory": "peak serving RSS x 1.25, at least 128 MB; duration billed per 1 ms"},
           "targets": TARGETS, "rows": rows}
    registry = Registry(home)
    runs = {v["version"]: v["run_id"] for v in registry.versions()}
    for row in rows:  # the model is chosen on the dev split; the test split only reports
        row["dev_hs6_top1"] = registry.client.get_run(runs[str(row["version"])]).data.metrics["dev_hs6_top1"]
    best = max(rows, key=lambda r: r["dev_hs6_top1"])
    out["best"] = {"kind": best["kind"], "upsample": best["upsample"], "version": best["version"],
                   "dev_hs6_top1": best["dev_hs6_top1"]}
    if args.promote:
        registry.set_alias("champion", str(best["version"]), reason=(
            f"bench-models: best HS6 top-1 on the dev split of {dataset.version} "
            f"({best['dev_hs6_top1']:.4f}, {best['kind']}{' up-sampled' if best['upsample'] else ''})"))
        out["best"]["promoted"] = True
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "models.json").write_text(json.dumps(out, indent=2, default=str))
    markdown = render(out)
    (RESULTS / "models.md").write_text(markdown)
    print(markdown)


def previous_rows(version: str) -> dict:
    """Rows measured before on this dataset version, from every ``models*.partial.json``
    (runs measuring different kinds side by side each keep their own file)."""
    rows = {}
    for path in sorted(RESULTS.glob("models*.partial.json")):
        saved = json.loads(path.read_text())
        if saved.get("dataset_version") == version:
            rows.update({(r["kind"], r["upsample"]): r for r in saved["rows"]})
    return rows


def save_partial(version: str, done: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"models{name}.partial.json").write_text(
        json.dumps({"dataset_version": version, "rows": list(done.values())}, default=str))


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def render(out: dict) -> str:
    rows = out["rows"]
    lines = [
        "# Model zoo on the customs declarations corpus", "",
        f"Machine: {out['machine']}. Dataset {out['dataset_version']}: {out['train_rows']:,} train rows, "
        f"{out['test_rows']:,} test rows (group-aware split). Accuracy in %, on the test split.", "",
        "| model | up-sampled | HS6 top-1 | HS6 top-5 | HS4 | HS2 | macro-F1 | coverage @95% | coverage @97% "
        "| train s | train peak MiB | p50 / p99 ms (1 line) | model-only p99 ms | batch 256 ms | serve MiB "
        "| artifact MiB | $ / 1M (1 line/request) | $ / 1M (batches of 256) |",
        "|" + "---|" * 18,
    ]
    for r in rows:
        m, s, c = r["test_metrics"], r["serving"], r["cost_per_million_usd"]
        at = m.get("coverage_at_precision", {})
        lines.append(
            f"| {r['kind']} | {'yes' if r['upsample'] else 'no'} | {pct(m['hs6_top1'])} | {pct(m['hs6_top5'])} "
            f"| {pct(m['hs4_top1'])} | {pct(m['hs2_top1'])} | {pct(m['macro_f1'])} | {pct(at.get('0.95'))} "
            f"| {pct(at.get('0.97'))} | {r['train_seconds']} | {r['training_peak_rss_mib']} "
            f"| {s['single_p50_ms']:.2f} / {s['single_p99_ms']:.2f} | {s['model_only_p99_ms']:.2f} "
            f"| {s['batch256_ms']:.0f} | {s['peak_rss_mib']:.0f} | {r['artifact_mib']} "
            f"| {c['one_line_per_request']:.3f} | {c['batches_of_256']:.4f} |")
    p = out["pricing"]
    lines += ["", f"Cost: AWS Lambda at ${p['lambda_gb_second_usd']} per GB-second and "
              f"${p['lambda_request_usd'] * 1e6:.2f} per million requests; memory = {p['memory']}; "
              "p50 compute time of one line per request, or of one batch of 256 per request.", ""]
    lines += ["## Test-only sets (never trained or tuned on): top-1 accuracy in %", "",
              "| model | up-sampled | HSCodeComp HS2 | HS4 | HS6 | ATLAS HS2 | HS4 | HS6 |", "|" + "---|" * 8]
    for r in rows:
        e = r["external"]
        cells = [pct(e.get(name, {}).get(f"hs{lv}_top1")) for name in ("HSCodeComp", "ATLAS") for lv in (2, 4, 6)]
        lines.append(f"| {r['kind']} | {'yes' if r['upsample'] else 'no'} | " + " | ".join(cells) + " |")
    lines += ["", "## Beside the paper (its private data; ours: HS6 top-1 on a public corpus)", "",
              "| model | paper, plain | paper, up-sampled | ours, plain | ours, up-sampled |", "|---|---|---|---|---|"]
    for kind, (before, after) in PAPER.items():
        ours = {r["upsample"]: r["test_metrics"]["hs6_top1"] for r in rows if r["kind"] == kind}
        lines.append(f"| {kind} | {pct(before)} | {pct(after)} | {pct(ours.get(False))} | {pct(ours.get(True))} |")
    lines += ["", "## Targets", ""] + targets(out)
    return "\n".join(lines) + "\n"


def targets(out: dict) -> list[str]:
    rows, t = out["rows"], out["targets"]
    best = next(r for r in rows if r["version"] == out["best"]["version"])
    bm = best["test_metrics"]
    lines = [f"Best model, chosen by HS6 top-1 on the dev split ({pct(best['dev_hs6_top1'])}%): "
             f"{best['kind']}{' (up-sampled)' if best['upsample'] else ''}, registered version {best['version']}"
             + (", now the champion." if out["best"].get("promoted") else ".")
             + " Its test numbers below are those of one model among all in the table.", ""]
    baselines = [("the linear row above", r["test_metrics"]["hs6_top1"])
                 for r in rows if r["kind"] == "linear" and not r["upsample"]]
    first = RESULTS / "baseline.json"  # the first issue's measured baseline, when present
    if first.exists():
        baselines.append(("benchmarks/results/baseline.json",
                          json.loads(first.read_text())["test_metrics"]["hs6_top1"]))
    for name, top1 in baselines:
        gain = 100 * (bm["hs6_top1"] - top1)
        lines.append(f"- beats the linear baseline ({name}, {pct(top1)}%) by ≥ {t['beat_baseline_by_points']} "
                     f"points HS6 top-1: {gain:+.1f} points "
                     f"({'met' if gain >= t['beat_baseline_by_points'] else 'missed'})")
    lines.append(f"- HS6 top-5 ≥ {pct(t['hs6_top5'])}%: {pct(bm['hs6_top5'])}% "
                 f"({'met' if bm['hs6_top5'] >= t['hs6_top5'] else 'missed'})")
    cov = max((r["test_metrics"].get("coverage_at_precision", {}).get("0.97") or 0) for r in rows)
    lines.append(f"- coverage at 97% precision ≥ {pct(t['coverage_at_97'])}% (best of all models): {pct(cov)}% "
                 f"({'met' if cov >= t['coverage_at_97'] else 'missed'})")
    for r in rows:
        if r["kind"] == "textcnn":
            p99, minutes = r["serving"]["model_only_p99_ms"], r["train_seconds"] / 60
            lines.append(f"- textcnn{' up-sampled' if r['upsample'] else ''}: one description p99 "
                         f"{p99:.2f} ms in-process through ONNX (target < {t['textcnn_p99_ms']} ms, "
                         f"{'met' if p99 < t['textcnn_p99_ms'] else 'missed'}); trains in {minutes:.1f} min "
                         f"(target < {t['textcnn_train_minutes']}, "
                         f"{'met' if minutes < t['textcnn_train_minutes'] else 'missed'})")
    return lines


if __name__ == "__main__":
    main()
