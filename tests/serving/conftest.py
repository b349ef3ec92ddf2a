"""A tiny real model, exported and registered the way training does it.

Trained once per session (a second or so) on hand-written customs lines over five HS6
codes; each test gets its own copy under its own ``HSOPS_HOME`` so tampering with one
copy cannot leak into another test.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from hsops.models import artifact
from hsops.models.linear import TfidfLinearClassifier
from hsops.registry.index import read_index, write_index
from hsops.serving.jobs import SIGNATURE_HEADER

TRAINING = {
    "392410": [
        "PLASTIC TABLEWARE SET 24 PCS", "PLASTIC DINNER PLATES DISPOSABLE",
        "PP PLASTIC CUPS 250ML 50CTNS", "MELAMINE PLASTIC BOWLS KITCHENWARE",
        "PLASTIC WATER BOTTLES 500ML", "PLASTIC SPOONS AND FORKS TABLEWARE",
        "PLASTIC FOOD CONTAINERS WITH LIDS", "PLASTIC SERVING TRAYS KITCHENWARE",
    ],
    "871120": [
        "MOTORCYCLE 125CC NEW HONDA", "MOTORCYCLES 150CC CKD UNITS",
        "USED MOTORCYCLE 110CC YAMAHA", "MOTORBIKE 125CC PETROL ENGINE",
        "MOTORCYCLE WITH RECIPROCATING ENGINE 200CC", "SCOOTER MOTORCYCLE 125 CC",
        "MOTORCYCLES SUZUKI 150CC COMPLETE", "DIRT BIKE MOTORCYCLE 250CC",
    ],
    "630900": [
        "WORN CLOTHING IN BALES", "USED CLOTHES MIXED BALES 45KG",
        "SECOND HAND CLOTHING AND SHOES", "WORN CLOTHING ASSORTED 500 BALES",
        "USED GARMENTS IN BALES", "SECONDHAND CLOTHES LADIES DRESSES USED",
        "USED CLOTHING CHILDREN BALES", "WORN TEXTILE ARTICLES USED CLOTHES",
    ],
    "401693": [
        "RUBBER GASKETS FOR PUMPS", "O RING RUBBER SEALS ASSORTED",
        "VULCANISED RUBBER GASKET 50MM", "RUBBER SEAL RING FOR PIPES",
        "RUBBER O-RINGS NBR 20X3", "GASKET RUBBER FOR ENGINE",
        "RUBBER WASHERS AND SEALS", "EPDM RUBBER GASKETS DOOR SEAL",
    ],
    "842131": [
        "AIR FILTER FOR ENGINE", "AIR FILTERS FOR TRUCKS",
        "INTAKE AIR FILTER ELEMENT", "AIR CLEANER FILTER FOR GENERATOR",
        "ENGINE AIR FILTER CARTRIDGE", "AIR FILTER ASSEMBLY FOR CAR",
        "HEAVY DUTY AIR FILTER 600MM", "AIR INTAKE FILTERS FOR DIESEL ENGINES",
    ],
}
CODES = sorted(TRAINING)
# T=2 softens the tiny model's near-1.0 scores; at threshold 0.5 gibberish abstains
# (confidence ~0.26) and every clear line does not (~0.95).
CALIBRATION = {"temperature": 2.0, "threshold": 0.5, "target_accuracy": 0.9}
GIBBERISH = "zzzz qqqq"


@pytest.fixture(scope="session")
def golden_artifact(tmp_path_factory) -> Path:
    """The published artifact directory (never modified by tests: copy it first)."""
    texts = [t for code in CODES for t in TRAINING[code]]
    labels = [code for code in CODES for _ in TRAINING[code]]
    model = TfidfLinearClassifier(epochs=3, min_df=1).fit(texts, labels)
    root = tmp_path_factory.mktemp("golden")
    staging = artifact.staging_dir(root)
    model.save(staging)
    (staging / "calibration.json").write_text(json.dumps(CALIBRATION), encoding="utf-8")
    artifact.write_manifest(staging, {"kind": "linear", "codes": CODES})
    return artifact.publish(staging, root / "artifacts")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HSOPS_HOME", str(home))
    return home


def register_copy(home: Path, golden: Path, version: str, aliases=("champion",),
                  calibration: dict | None = None) -> Path:
    """Copy ``golden`` into ``home`` as hs-classifier ``version`` and point ``aliases`` at it.

    With ``calibration``, the copy gets that calibration.json and a new manifest (a
    different artifact, as a retrained model would be).
    """
    target = home / "artifacts" / f"v{version}-{golden.name[:12]}"
    shutil.copytree(golden, target)
    if calibration is not None:
        (target / "calibration.json").write_text(json.dumps(calibration), encoding="utf-8")
        artifact.write_manifest(target, {"kind": "linear", "codes": CODES})
    index = read_index(home)
    entry = index.setdefault("models", {}).setdefault("hs-classifier", {"versions": {}, "aliases": {}})
    entry["versions"][version] = {"artifact": str(target.relative_to(home)), "kind": "linear"}
    for alias in aliases:
        entry["aliases"][alias] = version
    write_index(home, index)
    return target


@pytest.fixture
def artifact_dir(home, golden_artifact) -> Path:
    """A private copy of the artifact inside this test's HSOPS_HOME (not registered), in a
    folder not named by its digest, so tests may edit it and rewrite its manifest."""
    target = home / "artifacts" / "editable-copy"
    shutil.copytree(golden_artifact, target)
    return target


@pytest.fixture
def registered(home, golden_artifact) -> Path:
    """HSOPS_HOME with a copy of the artifact as hs-classifier version 1, the champion."""
    register_copy(home, golden_artifact, "1")
    return home


@pytest.fixture(scope="session")
def registrar():
    """``register_copy`` for tests that build their own homes."""
    return register_copy


@pytest.fixture(scope="session")
def facts() -> dict:
    """What the fixture model was built from, for tests to assert against."""
    return {"codes": CODES, "calibration": dict(CALIBRATION), "gibberish": GIBBERISH,
            "probes": {"70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]": "392410",
                       "HONDA MOTORCYCLE 150CC": "871120",
                       "USED CLOTHING BALES": "630900",
                       "RUBBER O RING GASKET": "401693",
                       "AIR FILTER FOR TRUCK ENGINE": "842131"}}


@pytest.fixture
def receiver():
    """A tiny HTTP server on 127.0.0.1 that records the POSTs it gets."""
    received: list[tuple[str, bytes, str]] = []
    status = {"code": 204}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # the http.server API's name
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, body, self.headers.get(SIGNATURE_HEADER, "")))
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.received, server.status = received, status
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)
