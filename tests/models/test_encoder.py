import numpy as np
import pytest

from hsops.models.encoder import TextEncoder, tokenize

CORPUS = ["70CTNS X 120 PCS PLASTIC CUPS", "LITHIUM ION BATTERY 125 PCS", "plastic cups 125ml",
          "USED MOTORCYCLE 125CC", "lithium battery pack"]


def test_tokens_split_letters_from_digits_and_fold_accents():
    assert tokenize("70CTNS X 120 PCS Café[500ML]") == ["70", "ctns", "x", "120", "pcs", "cafe", "500", "ml"]
    assert tokenize("  ") == [] and tokenize("★☆") == []


def test_a_typo_shares_most_ngram_ids_with_the_word():
    encoder = TextEncoder(min_count=1).fit(CORPUS)
    typo, word, other = (set(encoder.token_ids(t)) for t in ("lithiom", "lithium", "motorcycle"))
    assert len(typo & word) >= 4
    assert not typo & other


def test_frequent_numbers_keep_their_id_and_rare_ones_become_their_shape():
    encoder = TextEncoder(min_count=2).fit(CORPUS)
    assert encoder.token_ids("125") != encoder.token_ids("126")  # 125 is frequent
    assert encoder.token_ids("98765") == encoder.token_ids("12345")  # both unseen, five digits
    assert len(encoder.token_ids("98765")) == 1


def test_unseen_words_still_get_ids_and_known_words_their_own():
    encoder = TextEncoder(min_count=1).fit(CORPUS)
    assert "plastic" in encoder.words and "zebra" not in encoder.words
    assert encoder.token_ids("zebra")  # n-grams only
    assert len(encoder.token_ids("plastic")) > len(encoder._ngram_ids("plastic")) - 1


def test_encode_pads_with_zeros_and_caps_long_texts():
    encoder = TextEncoder(min_count=1, max_tokens=6, max_subwords=8).fit(CORPUS)
    ids = encoder.encode(["plastic cups", "", "word " * 10_000])
    assert ids.shape == (3, 6, 9) and ids.dtype == np.int64
    assert (ids[0, 2:] == 0).all() and (ids[0, :2, 0] > 0).all()
    assert (ids[1] == 0).all()
    assert (ids[2, :, 0] > 0).all()
    assert ids.max() < encoder.n_ids
    assert encoder.encode(["cups"], min_tokens=5).shape[1] == 5


def test_save_and_load_encode_identically(tmp_path):
    encoder = TextEncoder(min_count=1, hash_buckets=1000, ngram_range=(2, 5)).fit(CORPUS)
    encoder.save(tmp_path)
    loaded = TextEncoder.load(tmp_path)
    texts = CORPUS + ["LITHIOM 99999 unseen"]
    assert np.array_equal(loaded.encode(texts), encoder.encode(texts))
    assert loaded.config() == encoder.config()


def test_a_file_that_is_not_an_encoder_is_refused(tmp_path):
    (tmp_path / "encoder.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not an hsops text encoder"):
        TextEncoder.load(tmp_path)


@pytest.mark.parametrize("config", [{"max_tokens": 0}, {"hash_buckets": -1}, {"ngram_range": (4, 2)},
                                    {"max_subwords": 1.5}])
def test_bad_configuration_is_refused(config):
    with pytest.raises(ValueError):
        TextEncoder(**config)
