"""One handler per Task of ``lifecycle.asl.json``: ``handler(event, context) -> dict``.

Handlers are idempotent: the same event delivered twice does the work once (datasets
and artifacts are content-addressed, registration of a known artifact returns its
version, an alias already set is left alone, notifications carry a dedup key). They
read what they need from the event and write through ``context.backend`` (the platform
hands it over) or under ``HSOPS_HOME``; they never import the platform.
"""

FUNCTIONS: dict[str, str] = {
    "hsops-ingest": "hsops.pipeline.handlers.data:ingest",
    "hsops-validate": "hsops.pipeline.handlers.data:validate",
    "hsops-quarantine": "hsops.pipeline.handlers.data:quarantine",
    "hsops-split": "hsops.pipeline.handlers.data:split",
    "hsops-train": "hsops.pipeline.handlers.training:train",
    "hsops-evaluate": "hsops.pipeline.handlers.training:evaluate",
    "hsops-compare": "hsops.pipeline.handlers.release:compare",
    "hsops-register": "hsops.pipeline.handlers.release:register",
    "hsops-deploy": "hsops.pipeline.handlers.release:deploy",
    "hsops-notify": "hsops.pipeline.handlers.release:notify",
    # diagnostics: for tests, benchmarks and checking a deployment end to end
    "hsops-echo": "hsops.pipeline.diagnostics:echo",
    "hsops-sleep": "hsops.pipeline.diagnostics:sleep",
    "hsops-fail": "hsops.pipeline.diagnostics:fail",
    "hsops-allocate": "hsops.pipeline.diagnostics:allocate",
    "hsops-crash": "hsops.pipeline.diagnostics:crash",
}
