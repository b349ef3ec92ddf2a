"""A tiny real model, exported and registered the way training does it.

Trained once per session (a second or so) on hand-written customs lines over five HS6
codes; each test gets its own copy under its own ``HSOPS_HOME`` so tampering with one
copy cannot leak into another test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hsops.models import artifact
from hsops.models.linear import TfidfLinearClassifier
from hsops.registry.index import write_index

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
CALIBRATION = {"temperature": 0.5, "threshold": 0.35, "target_accuracy": 0.9}


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


@pytest.fixture
def artifact_dir(home, golden_artifact) -> Path:
    """A private copy of the artifact inside this test's HSOPS_HOME."""
    target = home / "artifacts" / golden_artifact.name
    shutil.copytree(golden_artifact, target)
    return target


@pytest.fixture
def registered(home, artifact_dir) -> Path:
    """HSOPS_HOME with the artifact registered as hs-classifier version 1, the champion."""
    write_index(home, {"models": {"hs-classifier": {
        "versions": {"1": {"artifact": f"artifacts/{artifact_dir.name}", "kind": "linear"}},
        "aliases": {"champion": "1"}}}})
    return home
