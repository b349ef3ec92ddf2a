import numpy as np
import pytest

from hsops.models.text_features import TfidfFeaturizer, char_terms, normalise_text, word_terms

TEXTS = [
    "92 CTNS X 30 PCS PLASTIC PLATES[16CM]",
    "70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]",
    "AIR FILTER 2PCS X 5 CTNS",
    "USED MOTORCYCLE HONDA CG125",
    "USED CLOTHING 2 BALES",
    "RUBBER GASKET FOR PUMP",
]


def fitted(**kw):
    kw.setdefault("min_df", 1)
    return TfidfFeaturizer(**kw).fit(TEXTS)


def block_slices(f):
    out, start = {}, 0
    for block in f.blocks:
        out[block.name] = slice(start, start + len(block.terms))
        start += len(block.terms)
    return out


def test_normalise_text_folds_digits_case_accents_and_punctuation():
    assert normalise_text("70CTNS X 120 PCS  BOTTLES[500ML]", fold_digits=True) == "00ctns x 000 pcs bottles 000ml"
    assert normalise_text("70CTNS X 120 PCS  BOTTLES[500ML]") == "70ctns x 120 pcs bottles 500ml"
    assert normalise_text("CAFÉ-Crème") == "cafe creme"
    assert normalise_text("  --  ") == ""


def test_word_terms_keep_letter_words_and_add_bigrams():
    assert word_terms(["000", "pcs", "x", "plastic", "cups"]) == [
        "pcs", "plastic", "cups", "pcs plastic", "plastic cups"]


def test_char_terms_are_padded_word_ngrams():
    assert char_terms(["ab"], 2, 3) == [" a", "ab", "b ", " ab", "ab "]
    assert char_terms(["a"], 4, 5) == []


def test_shapes():
    f = fitted()
    x = f.transform(TEXTS)
    assert x.shape == (len(TEXTS), f.n_features)
    assert f.n_features == sum(len(b.terms) for b in f.blocks)
    assert [b.name for b in f.blocks] == ["word", "char"]
    assert f.transform([]).shape == (0, f.n_features)
    assert x.dtype == np.float32


def test_each_block_of_each_row_has_unit_norm():
    f = fitted()
    x = f.transform(TEXTS + ["plastic"]).toarray()
    parts = block_slices(f)
    for name in ("word", "char"):
        norms = np.linalg.norm(x[:, parts[name]], axis=1)
        assert np.allclose(norms, 1.0, atol=1e-5), name
    assert np.all(x >= 0)


def test_unseen_words_still_get_char_features():
    f = fitted()
    x = f.transform(["PLASTICS BOTTEL", "zzzz qqqq"]).toarray()
    parts = block_slices(f)
    assert not x[0, parts["word"]].any()  # neither word was seen
    assert x[0, parts["char"]].any()
    assert np.isclose(np.linalg.norm(x[0, parts["char"]]), 1.0, atol=1e-5)
    assert not x[1].any()  # nothing in common: an all-zero row, not NaN
    assert np.isfinite(x).all()


def test_digits_are_folded_to_zero_on_request():
    f = TfidfFeaturizer(min_df=1, fold_digits=True).fit(TEXTS)
    a, b = f.transform(["500ML BOTTLES", "250ML BOTTLES"]).toarray()
    assert np.array_equal(a, b)
    terms = [t for block in f.blocks for t in block.terms]
    assert not any(ch in t for t in terms for ch in "123456789")
    assert "0ml" in f.blocks[1].terms


def test_digits_are_kept_by_default_so_engine_capacity_counts():
    f = TfidfFeaturizer(min_df=1).fit(["MOTORCYCLE 150CC", "MOTORCYCLE 300CC"])
    a, b = f.transform(["MOTORCYCLE 150CC", "MOTORCYCLE 300CC"]).toarray()
    assert not np.array_equal(a, b)
    assert "150cc" in f.blocks[0].terms


def test_fold_digits_survives_save_and_load(tmp_path):
    f = TfidfFeaturizer(min_df=1, fold_digits=True).fit(TEXTS)
    f.save(tmp_path)
    assert TfidfFeaturizer.load(tmp_path).fold_digits is True


def test_min_df_and_max_features():
    f = TfidfFeaturizer(min_df=2).fit(TEXTS)
    words = f.blocks[0].terms
    assert "plastic" in words and "honda" not in words
    capped = TfidfFeaturizer(min_df=1, max_features=5).fit(TEXTS)
    assert all(len(b.terms) == 5 for b in capped.blocks)
    assert "plastic" in capped.blocks[0].terms  # the most frequent kept


def test_rarer_terms_weigh_more():
    f = fitted()
    idf = dict(zip(f.blocks[0].terms, f.blocks[0].idf))
    assert idf["honda"] > idf["plastic"] > 0


def test_feature_names_for_explanations():
    f = fitted()
    x = f.transform(["PLASTIC"])
    names = {f.term(j) for j in x.indices}
    assert ("word", "plastic") in names
    assert ("char", " pl") in names
    with pytest.raises(IndexError):
        f.term(f.n_features)


def test_save_load_round_trip_is_identical(tmp_path):
    f = fitted(char_ngrams=(2, 4))
    files = f.save(tmp_path)
    assert sorted(files) == sorted(p.name for p in tmp_path.iterdir())
    g = TfidfFeaturizer.load(tmp_path)
    assert (g.char_ngrams, g.min_df, g.max_features) == ((2, 4), 1, 200_000)
    probe = TEXTS + ["UNSEEN PLASTIKK GASKETS 12PCS"]
    a, b = f.transform(probe), g.transform(probe)
    assert (a != b).nnz == 0
    assert np.array_equal(a.indices, b.indices)
    with np.load(tmp_path / "featurizer_idf.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"word", "char"}


def test_load_rejects_an_unknown_format(tmp_path):
    fitted().save(tmp_path)
    (tmp_path / "featurizer.json").write_text('{"format": "other/9"}', encoding="utf-8")
    with pytest.raises(ValueError, match="other/9"):
        TfidfFeaturizer.load(tmp_path)


def test_unfitted_and_empty():
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfFeaturizer().transform(["x"])
    with pytest.raises(ValueError, match="no texts"):
        TfidfFeaturizer().fit([])


def test_fit_is_deterministic():
    a, b = fitted(), fitted()
    assert [blk.terms for blk in a.blocks] == [blk.terms for blk in b.blocks]
    assert (a.transform(TEXTS) != b.transform(TEXTS)).nnz == 0
