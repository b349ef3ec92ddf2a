"""Human-readable tables (rich) for ingest reports and evaluation metrics."""

from __future__ import annotations

from rich.table import Table

LABELS = {
    "n": "rows", "hs6_top1": "HS6 top-1", "hs6_top5": "HS6 top-5", "hs4_top1": "HS4 (heading)",
    "hs2_top1": "HS2 (chapter)", "macro_f1": "HS6 macro-F1", "threshold": "abstain below confidence",
    "coverage_at_target": "coverage (answered share)", "accuracy_at_target": "accuracy when answered",
    "heading_threshold": "heading answer from confidence",
    "heading_fallback_rate": "answered at heading level only",
    "heading_fallback_accuracy": "heading accuracy when so answered",
    "unseen_label_rows": "rows with a code never seen in training", "mean_confidence": "mean confidence",
}
PERCENT = {"hs6_top1", "hs6_top5", "hs4_top1", "hs2_top1", "macro_f1", "coverage_at_target",
           "accuracy_at_target", "heading_fallback_rate", "heading_fallback_accuracy", "mean_confidence"}


def metrics_table(metrics: dict, title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in LABELS.items():
        if key not in metrics or metrics[key] is None:
            continue
        value = metrics[key]
        text = f"{100 * value:.1f}%" if key in PERCENT else (f"{value:.3f}" if isinstance(value, float) else f"{value:,}")
        table.add_row(label, text)
    return table


def curve_table(metrics: dict, title: str = "Risk-coverage: accuracy of the most confident answers") -> Table:
    """The risk-coverage curve, then the largest answered share reaching each precision target."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("answered share", justify="right")
    table.add_column("accuracy when answered", justify="right")
    table.add_column("abstain below confidence", justify="right")
    curve = metrics.get("risk_coverage") or []
    for i, point in enumerate(curve):
        table.add_row(f"{100 * point['coverage']:.1f}%", f"{100 * point['accuracy']:.1f}%",
                      f"{point['threshold']:.3f}", end_section=i == len(curve) - 1)
    for target, coverage in (metrics.get("coverage_at_precision") or {}).items():
        table.add_row(f"{100 * coverage:.1f}%", f"at least {100 * float(target):.0f}%", "(largest share)")
    return table


def ingest_table(report: dict) -> Table:
    table = Table(title=f"Ingest of {report['source'].rsplit('/', 1)[-1]}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("rows_read", "accepted", "quarantined", "duplicate_rows", "conflicting_descriptions",
                "codes_not_in_hs2022", "classes_hs6", "dataset_version"):
        table.add_row(key.replace("_", " "), f"{report[key]:,}" if isinstance(report[key], int) else str(report[key]))
    for reason, count in report["quarantine_reasons"].items():
        table.add_row(f"  quarantined: {reason}", f"{count:,}")
    if report.get("quarantine_file"):
        table.add_row("quarantine file", report["quarantine_file"])
    return table
