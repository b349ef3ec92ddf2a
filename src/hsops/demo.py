"""``hsops demo`` / ``make demo``: the whole spine on real declarations, end to end.

Ingest the customs declarations corpus, train the linear baseline, evaluate it on the
held-out (group-aware) test split, register it as champion, start the real HTTP server
on 127.0.0.1 in its own process, send realistic descriptions through HTTP, print the
answers, and stop the server. Without a corpus it says so and falls back to training on
the HS 2022 nomenclature texts alone, so the loop still runs.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console

from hsops._config import corpus_path, data_home, hsops_home

SAMPLE_DESCRIPTIONS = [
    "100 CTNS X 44 PCS PLASTIC STORAGE BOWLS",
    "USED TOYOTA COROLLA SALOON CAR CHASSIS NO NZE1213045887",
    "70 BALES USED CLOTHING",
    "AIR FILTER 2PCS X 5 CTNS",
    "LITHIOM ION BATTERY 12V FOR SOLAR",
    "BOYS BOXER SHORTS",
    "MOTORCYCLE 150CC HONDA ACE",
    "WASHER 2G8615",
]


def nomenclature_csv(home: Path) -> Path:
    """A training file made from HS 2022 texts, for a machine without the corpus."""
    from hsops.domain.nomenclature import nomenclature

    nom = nomenclature()
    path = home / "fallback" / "hs2022_nomenclature.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["description", "hs_code"])
        for code in nom.codes(6):
            entry = nom.get(code)
            writer.writerow([entry.description, code])
            writer.writerow([f"{nom.text(code[:4])} {entry.description}", code])
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HSOPS_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hsops.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("server did not become healthy within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # `hsops serve` drains its replicas and exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(console: Console, as_json: bool = False) -> dict:
    from hsops.cli import predictions_table, run_ingest, run_train
    from hsops.training.report import ingest_table, metrics_table

    home = hsops_home()
    say = (lambda *a, **k: None) if as_json else console.print
    say(f"[bold]hsops demo[/] (state in {home})")
    source = corpus_path()
    if source is None:
        where = data_home() or "HSOPS_DATA_HOME / ../shared/data"
        say(f"[yellow]No customs declarations corpus found under {where}.[/] Falling back to the HS 2022 "
            "nomenclature texts: the loop runs, but predictions on real declarations will be weak. "
            "Set HSOPS_DATA_HOME to a folder holding customs_declarations_en/ for the real demo.")
        source = nomenclature_csv(home)
    say(f"1. ingest {source.name}")
    report = run_ingest(source, None, None, None, as_json)
    say(ingest_table(report.to_dict()))

    say("2. train the linear baseline (TF-IDF word + char n-grams, softmax) on the train split")
    result, version, alias = run_train(report.dataset_version, "linear", {}, 0.9, "champion", as_json)
    say(metrics_table(result.test_metrics, f"3. evaluation on the held-out test split "
                                           f"({result.test_metrics.get('n', 0):,} rows, group-aware)"))
    say(f"   trained in {result.train_seconds:.1f}s; registered as hs-classifier@{version} ({alias})")

    say("4. start the prediction server on 127.0.0.1 and send descriptions over HTTP")
    proc, base = start_server(home)
    try:
        response = httpx.post(f"{base}/v1/predict", json={"descriptions": SAMPLE_DESCRIPTIONS, "top_k": 3},
                              timeout=60)
        response.raise_for_status()
        answer = response.json()
    finally:
        stop_server(proc)
    say(predictions_table(SAMPLE_DESCRIPTIONS, answer["predictions"]))
    say(f"   server stopped. Each answer is logged in the state store under its request_id "
        f"({answer['request_id']}-0 ...).")
    say("Next: `hsops predict \"...\"`, `hsops evaluate --model champion --json`, `hsops serve`, "
        "`hsops models`.")
    summary = {"ingest": report.to_dict(), "model_version": version, "alias": alias,
               "train_seconds": result.train_seconds, "test_metrics": result.test_metrics,
               "http_predictions": answer}
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
