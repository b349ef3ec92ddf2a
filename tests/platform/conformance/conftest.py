"""The backend conformance suite: every test here takes the ``backend`` fixture and runs
against each backend (``local`` now; ``aws`` against a moto server when it exists).

Tests use only the Backend contract (``hsops.platform.backend``), never a backend's
internals, so a new backend passes by implementing the contract.
"""

from __future__ import annotations

import pytest

from hsops.platform.local.backend import LocalBackend

# handlers the runtime tests invoke; they ship in the package (benchmarks use them too)
DIAGNOSTIC_FUNCTIONS = {
    "hsops-echo": "hsops.pipeline.diagnostics:echo",
    "hsops-sleep": "hsops.pipeline.diagnostics:sleep",
    "hsops-fail": "hsops.pipeline.diagnostics:fail",
    "hsops-allocate": "hsops.pipeline.diagnostics:allocate",
    "hsops-crash": "hsops.pipeline.diagnostics:crash",
}


@pytest.fixture(params=["local"])
def backend(request, tmp_path):
    if request.param == "local":
        b = LocalBackend(tmp_path / "home", functions=DIAGNOSTIC_FUNCTIONS, max_workers=2, idle_timeout=2.0)
    b.start()
    yield b
    b.close()
