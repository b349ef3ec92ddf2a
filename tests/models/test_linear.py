"""The linear model's saved form: the serving scorer's parts, and the older whole matrix."""

from __future__ import annotations

import numpy as np
import pytest

from hsops.models.linear import WEIGHTS_FILE, TfidfLinearClassifier

TEXTS = ["PLASTIC WATER BOTTLES", "PLASTIC CUPS 250ML", "AIR FILTER FOR TRUCK", "OIL FILTER ENGINE",
         "COTTON T SHIRTS", "MENS COTTON SHIRTS", "RUBBER O RING", "RUBBER GASKET SEAL"] * 3
LABELS = ["392330", "392410", "842131", "842123", "610910", "620520", "401693", "401693"] * 3
QUERIES = ["PLASTIC BOTTLE", "TRUCK AIR FILTER", "COTTON SHIRT", "O RING", "unseen words entirely"]


def test_saved_parts_load_to_the_same_scores_and_weights(tmp_path):
    model = TfidfLinearClassifier(epochs=3, min_df=1).fit(TEXTS, LABELS)
    model.save(tmp_path / "m")
    with np.load(tmp_path / "m" / WEIGHTS_FILE) as saved:
        assert {"dense", "dense_features", "data", "indices", "indptr", "bias"} <= set(saved.files)
    loaded = TfidfLinearClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(QUERIES), model.predict_proba(QUERIES))
    assert (loaded.weights_ != model.weights_).nnz == 0


def test_an_artifact_saved_as_the_whole_matrix_still_loads(tmp_path):
    """Artifacts registered before the parts were saved hold the compressed whole matrix."""
    model = TfidfLinearClassifier(epochs=3, min_df=1).fit(TEXTS, LABELS)
    model.save(tmp_path / "m")
    w = model.weights_
    np.savez_compressed(tmp_path / "m" / WEIGHTS_FILE, data=w.data, indices=w.indices.astype(np.int32),
                        indptr=w.indptr.astype(np.int64), shape=np.array(w.shape), bias=model.bias_)
    loaded = TfidfLinearClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), model.predict_proba(QUERIES), rtol=1e-6)


def test_parts_that_do_not_fit_are_refused(tmp_path):
    model = TfidfLinearClassifier(epochs=3, min_df=1).fit(TEXTS, LABELS)
    model.save(tmp_path / "m")
    path = tmp_path / "m" / WEIGHTS_FILE
    with np.load(path) as saved:
        parts = {k: saved[k] for k in saved.files}
    parts["dense_features"] = np.append(parts["dense_features"], parts["shape"][0] + 5)  # a row past the end
    parts["dense"] = np.vstack([parts["dense"], np.zeros((1, parts["dense"].shape[1]), np.float32)])
    np.savez(path, **parts)
    with pytest.raises(ValueError, match="do not fit"):
        TfidfLinearClassifier.load(tmp_path / "m")
