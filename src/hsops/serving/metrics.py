"""Prometheus metrics of the serving path (``GET /metrics``, text format).

Several replica processes answer on one port, so a scrape lands on any of them; with
``PROMETHEUS_MULTIPROC_DIR`` set (the replica supervisor sets it before a replica
starts) every process writes its samples to files there and ``render()`` merges them,
which is prometheus-client's multiprocess mode. Gauges say how they merge: the queue
depth and the replica count are sums over live processes; resident memory is one
series per process. Without the variable (one process, tests) the samples stay in
memory.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter("hsops_http_requests", "HTTP requests answered, by route and status",
                        ["method", "route", "status"], registry=REGISTRY)
REQUEST_LATENCY = Histogram("hsops_request_duration_seconds",
                            "Time from request to answer of prediction calls, by model and variant",
                            ["route", "model", "variant"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
PREDICTIONS = Counter("hsops_predictions", "Descriptions answered, by model, variant and pattern",
                      ["model", "variant", "pattern"], registry=REGISTRY)
ABSTENTIONS = Counter("hsops_abstentions", "Answers whose subheading abstained",
                      ["model", "variant", "pattern"], registry=REGISTRY)
BATCH_SIZE = Histogram("hsops_batch_size_descriptions", "Descriptions per model call (micro-batches)",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096), registry=REGISTRY)
BATCH_REQUESTS = Histogram("hsops_batch_size_requests", "Requests merged into one model call",
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY)
QUEUE_WAIT = Histogram("hsops_queue_wait_seconds", "Time a real-time request waited for the model",
                       buckets=_LATENCY_BUCKETS, registry=REGISTRY)
QUEUE_DEPTH = Gauge("hsops_queue_depth_descriptions", "Descriptions waiting for the model",
                    registry=REGISTRY, multiprocess_mode="livesum")
REPLICAS = Gauge("hsops_replicas", "Serving replicas up and ready", registry=REGISTRY,
                 multiprocess_mode="livesum")
REPLICA_RSS = Gauge("hsops_replica_resident_bytes", "Resident memory of each serving replica",
                    registry=REGISTRY, multiprocess_mode="liveall")
SHED = Counter("hsops_shed_requests", "Requests refused to protect latency (429/503)", ["reason"],
               registry=REGISTRY)
MODEL_LOADED = Gauge("hsops_model_loaded", "1 for each model version a replica serves",
                     ["model", "variant"], registry=REGISTRY, multiprocess_mode="liveall")
MODEL_LOADS = Counter("hsops_model_loads", "Model loads by outcome (a refused artifact keeps the old model)",
                      ["outcome"], registry=REGISTRY)
SHED_REASONS = ("queue_full", "queue_timeout", "in_flight", "rate_limited", "draining")
for _reason in SHED_REASONS:  # every reason exported from the start, at 0: a rate needs a baseline
    SHED.labels(_reason)

JOBS = Counter("hsops_jobs", "Batch and async jobs ended, by kind and status", ["kind", "status"],
               registry=REGISTRY)


def render() -> bytes:
    """The text exposition of every process's samples."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def mark_process_dead(pid: int, directory: str | None = None) -> None:
    """Drop a stopped replica's live gauges (its counters stay: they must not go back)."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path=directory)


def count_answers(items: list[dict], variant: str, pattern: str) -> None:
    """Predictions and abstentions of answered items (``Prediction.to_dict`` shape)."""
    if not items:
        return
    model = items[0]["model_version"]
    PREDICTIONS.labels(model, variant, pattern).inc(len(items))
    abstained = sum(1 for item in items if item["abstain"])
    if abstained:
        ABSTENTIONS.labels(model, variant, pattern).inc(abstained)
