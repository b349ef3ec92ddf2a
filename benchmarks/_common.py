"""What the benchmarks share: the machine description, and the serving probe of the package."""

from __future__ import annotations

import os
import platform

from hsops.serving.probe import cost_per_million, serving_probe  # noqa: F401  (re-exported)


def machine() -> dict:
    return {"python": platform.python_version(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
