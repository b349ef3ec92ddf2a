"""models/calibration.py: reading calibration.json (old and new), abstaining, heading fallback."""

import json

import numpy as np
import pytest

from hsops.models.artifact import ArtifactError
from hsops.models.calibration import CALIBRATION_FILE, Calibration, Headings


def write(directory, body) -> None:
    (directory / CALIBRATION_FILE).write_text(body if isinstance(body, str) else json.dumps(body))


def test_a_file_with_a_heading_threshold_reads_it(tmp_path):
    write(tmp_path, {"temperature": 1.5, "threshold": 0.6, "target_accuracy": 0.9, "heading_threshold": 0.7})
    assert Calibration.read(tmp_path) == Calibration(1.5, 0.6, 0.9, 0.7)


def test_an_old_file_without_heading_threshold_loads_and_never_falls_back(tmp_path):
    write(tmp_path, {"temperature": 2.0, "threshold": 0.5, "target_accuracy": 0.9})
    calibration = Calibration.read(tmp_path)
    assert calibration.heading_threshold is None and not calibration.falls_back
    assert calibration.level(0.1, 0.99) == "none"
    assert not calibration.heading_answered(np.array([0.1]), np.array([0.99])).any()


def test_a_null_heading_threshold_is_the_same_as_none(tmp_path):
    write(tmp_path, {"threshold": 0.5, "heading_threshold": None})
    assert Calibration.read(tmp_path).heading_threshold is None


def test_no_file_is_the_identity_calibration(tmp_path):
    assert Calibration.read(tmp_path) == Calibration()


@pytest.mark.parametrize("body, match", [
    ({"heading_threshold": 1.5}, r"heading_threshold must be within \[0, 1\]"),
    ({"heading_threshold": -0.1}, r"heading_threshold must be within \[0, 1\]"),
    ({"heading_threshold": "high"}, "heading_threshold must be a number"),
    ({"heading_threshold": True}, "heading_threshold must be a number"),
    ({"heading_threshold": [0.5]}, "heading_threshold must be a number"),
    ('{"heading_threshold": NaN}', r"heading_threshold must be within \[0, 1\]"),
    ({"threshold": "0.5"}, "threshold must be a number"),
    ("[1, 2]", "unreadable calibration"),
    ("{not json", "unreadable calibration"),
])
def test_a_bad_calibration_is_refused_naming_the_field_and_value(tmp_path, body, match):
    write(tmp_path, body)
    with pytest.raises(ArtifactError, match=match):
        Calibration.read(tmp_path)


def test_levels_from_most_to_least_specific():
    calibration = Calibration(threshold=0.6, heading_threshold=0.8)
    assert calibration.level(0.7, 0.7) == "subheading"  # the subheading passes: heading not consulted
    assert calibration.level(0.5, 0.85) == "heading"
    assert calibration.level(0.5, 0.8) == "heading"  # at the threshold counts, as for the subheading
    assert calibration.level(0.5, 0.79) == "none"
    np.testing.assert_array_equal(
        calibration.heading_answered(np.array([0.7, 0.5, 0.5]), np.array([0.9, 0.85, 0.79])),
        [False, True, False])


def test_a_heading_threshold_of_one_never_falls_back():
    calibration = Calibration(threshold=1.0, heading_threshold=1.0)  # an uncalibrated model
    assert not calibration.falls_back
    assert calibration.level(1.0, 1.0) == "none"


def test_headings_sum_the_classes_under_each_heading():
    headings = Headings(["392410", "871120", "392490", "630900"])
    assert list(headings.codes) == ["3924", "6309", "8711"] and len(headings) == 3
    proba = np.array([[0.30, 0.35, 0.25, 0.10],  # 3924 (0.55) beats the best subheading's 8711
                      [0.10, 0.80, 0.05, 0.05]])
    np.testing.assert_allclose(headings.proba(proba), [[0.55, 0.10, 0.35], [0.15, 0.05, 0.80]])
    codes, confidence = headings.best(proba)
    assert list(codes) == ["3924", "8711"]
    np.testing.assert_allclose(confidence, [0.55, 0.80])


def test_headings_of_no_rows_are_empty():
    codes, confidence = Headings(["392410", "871120"]).best(np.zeros((0, 2)))
    assert len(codes) == 0 and len(confidence) == 0
