import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hsops import _config
from hsops.data.datasets import datasets_root, load_dataset
from hsops.data.ingest import ingest_file
from hsops.data.readers import DataFileError
from hsops.data.splits import group_key

from .rows import GOOD, csv_text, good_pairs, jsonl_text


@pytest.fixture
def home(hsops_home):
    return hsops_home


def check_counts(report, accepted, quarantined, reasons=None):
    assert report.rows_read == report.accepted + report.quarantined
    assert (report.accepted, report.quarantined) == (accepted, quarantined)
    if reasons is not None:
        assert report.quarantine_reasons == reasons


def quarantine(report):
    with open(report.quarantine_file, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def stored(report, home):
    return load_dataset(home, report.dataset_version)


def full_codes():
    return [full for _, _, full in GOOD]


def test_clean_file(write_file, home):
    report = ingest_file(write_file("good.csv", csv_text(good_pairs())), home)
    check_counts(report, len(GOOD), 0, {})
    assert report.quarantine_file is None
    assert report.new_version is True
    assert report.format == "csv"
    assert report.classes_hs6 == len({c[:6] for c in full_codes()})
    assert report.duplicate_rows == 0
    ds = stored(report, home)
    assert sorted(ds.codes) == sorted(full_codes())
    assert report.to_dict()["dataset_version"] == report.dataset_version


def test_empty_file_is_an_error_not_a_dataset(write_file, home):
    with pytest.raises(DataFileError, match="empty"):
        ingest_file(write_file("e.csv", b""), home)
    with pytest.raises(DataFileError, match="no data rows"):
        ingest_file(write_file("h.csv", "description,hs_code\n"), home)
    assert not datasets_root(home).exists() or not any(datasets_root(home).iterdir())


def test_wrong_columns_list_the_available_ones(write_file, home):
    path = write_file("w.csv", csv_text(good_pairs(), header=("item", "tariff")))
    with pytest.raises(DataFileError, match=r"\['item', 'tariff'\]"):
        ingest_file(path, home)
    with pytest.raises(DataFileError, match=r"no description column 'desc'.*\['item', 'tariff'\]"):
        ingest_file(path, home, text_column="desc", label_column="tariff")
    report = ingest_file(path, home, text_column="item", label_column="tariff")
    check_counts(report, len(GOOD), 0)


def test_auto_detected_corpus_columns(write_file, home):
    header = ("row_id", "goods_description", "hs_code", "hs6", "tariff_line_description")
    rows = [(i, t, c, c[:6], "Tableware and kitchenware of plastics") for i, (t, c) in enumerate(good_pairs())]
    report = ingest_file(write_file("c.csv", csv_text(rows, header=header)), home)
    check_counts(report, len(GOOD), 0)
    ds = stored(report, home)
    assert "Tableware and kitchenware of plastics" not in ds.texts
    assert sorted(ds.codes) == sorted(full_codes())  # hs_code, not hs6


def test_non_utf8_row_is_quarantined_alone(write_file, home):
    lines = [b"description,hs_code"] + [f"{t},{c}".encode() for t, c in good_pairs()]
    lines.insert(4, b"CAF\xc9 AU LAIT MACHINE,851671")
    report = ingest_file(write_file("l1.csv", b"\r\n".join(lines)), home)
    check_counts(report, len(GOOD), 1, {"not_utf8": 1})
    (entry,) = quarantine(report)
    assert entry["row"] == 4 and entry["reason"] == "not_utf8"
    assert "CAF\\xc9" in entry["record"]["description"]


def test_non_utf8_header_does_not_break_the_quarantine(write_file, home):
    content = b"description,hs_code,pr\xe9cis\nPLASTIC CUPS,ABC,x\nAIR FILTER,842131,y\n"
    report = ingest_file(write_file("h.csv", content), home)
    check_counts(report, 1, 1, {"invalid_code": 1})
    assert quarantine(report)[0]["record"]["pr\\xe9cis"] == "x"


def test_blank_descriptions(write_file, home):
    rows = good_pairs()[:3] + [("", "392410"), ("    ", "392410"), ("***", "392410")] + good_pairs()[3:]
    report = ingest_file(write_file("b.csv", csv_text(rows)), home)
    check_counts(report, len(GOOD), 3, {"blank_description": 3})
    assert [e["row"] for e in quarantine(report)] == [4, 5, 6]


def test_bad_codes(write_file, home):
    rows = [("PLASTIC CUPS", "ABC")] + good_pairs() + [("AIR FILTER", "12"), ("MISC", "9999.99"), ("X", "")]
    report = ingest_file(write_file("c.csv", csv_text(rows)), home)
    check_counts(report, len(GOOD), 4, {"invalid_code": 4})
    entries = quarantine(report)
    assert [e["row"] for e in entries] == [1, len(GOOD) + 2, len(GOOD) + 3, len(GOOD) + 4]
    assert "'ABC'" in entries[0]["message"] and "'9999.99'" in entries[2]["message"]
    assert report.examples[0] == {"row": 1, "reason": "invalid_code", "message": entries[0]["message"]}


def test_megabyte_description_is_quarantined_and_later_rows_kept(write_file, home):
    rows = good_pairs()[:2] + [("BIG " * 250_000, "392410")] + good_pairs()[2:]
    report = ingest_file(write_file("big.csv", csv_text(rows)), home)
    check_counts(report, len(GOOD), 1, {"description_too_long": 1})
    (entry,) = quarantine(report)
    assert entry["row"] == 3
    assert sorted(stored(report, home).codes) == sorted(full_codes())


def test_duplicates_are_reported_and_kept(write_file, home):
    rows = good_pairs() + good_pairs()[:3] + [good_pairs()[0]]
    report = ingest_file(write_file("d.csv", csv_text(rows)), home)
    check_counts(report, len(GOOD) + 4, 0)
    assert report.duplicate_rows == 4
    assert len(stored(report, home)) == len(GOOD) + 4


def test_conflicting_descriptions_and_old_codes_are_counted(write_file, home):
    rows = good_pairs() + [(GOOD[0][0].lower(), "3924900000"), ("MOBILE PHONE", "8517120000")]
    report = ingest_file(write_file("d.csv", csv_text(rows)), home)
    check_counts(report, len(GOOD) + 2, 0)
    assert report.conflicting_descriptions == 1
    assert report.codes_not_in_hs2022 == 1


def test_crlf_gives_the_same_rows_and_version(write_file, home):
    lf = ingest_file(write_file("lf.csv", csv_text(good_pairs())), home)
    crlf = ingest_file(write_file("crlf.csv", csv_text(good_pairs(), newline="\r\n")), home)
    check_counts(crlf, len(GOOD), 0)
    assert crlf.dataset_version == lf.dataset_version
    assert crlf.new_version is False
    assert not any("\r" in t for t in stored(crlf, home).texts)


def test_bom_gives_the_same_version(write_file, home):
    plain = ingest_file(write_file("a.csv", csv_text(good_pairs())), home)
    bom = ingest_file(write_file("bom.csv", b"\xef\xbb\xbf" + csv_text(good_pairs()).encode()), home)
    check_counts(bom, len(GOOD), 0)
    assert bom.dataset_version == plain.dataset_version


def test_row_with_too_many_fields(write_file, home):
    content = csv_text(good_pairs()[:4]) + "PLASTIC CUPS,392410,EXTRA,FIELDS\n" + \
        "".join(f"{t},{c}\n" for t, c in good_pairs()[4:])
    report = ingest_file(write_file("f.csv", content), home)
    check_counts(report, len(GOOD), 1, {"malformed_row": 1})
    (entry,) = quarantine(report)
    assert entry["row"] == 5 and "4 fields" in entry["message"]


def test_jsonl_malformed_and_non_object_lines(write_file, home):
    lines = jsonl_text(good_pairs()).splitlines()
    lines.insert(2, '{"description": "PLASTIC CUPS", "hs_code": ')
    lines.insert(5, '["PLASTIC CUPS", "392410"]')
    lines.insert(6, '{"description": "CUPS \\udc80", "hs_code": "392410"}')
    report = ingest_file(write_file("a.jsonl", "\n".join(lines) + "\n"), home)
    check_counts(report, len(GOOD), 3, {"malformed_row": 2, "not_utf8": 1})
    assert [e["row"] for e in quarantine(report)] == [3, 6, 7]


def test_parquet_numeric_codes_and_nulls(tmp_path, home):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({
        "description": ["PLASTIC CUPS", "ROSES", None, "WASHER", "AIR FILTER", "THING"],
        "hs_code": [3924100000.0, 603110000.0, 8421310000.0, None, 8421310000.0, 3924.1],
    }), path)
    report = ingest_file(path, home)
    check_counts(report, 3, 3, {"missing_description": 1, "invalid_code": 2})
    assert report.format == "parquet"
    assert sorted(stored(report, home).codes) == ["0603110000", "3924100000", "8421310000"]
    assert [e["row"] for e in quarantine(report)] == [3, 4, 6]


def test_parquet_string_codes_match_the_csv_version(tmp_path, write_file, home):
    path = tmp_path / "a.parquet"
    pairs = good_pairs()
    pq.write_table(pa.table({"description": [t for t, _ in pairs], "hs_code": [c for _, c in pairs]}), path)
    from_parquet = ingest_file(path, home)
    from_csv = ingest_file(write_file("a.csv", csv_text(pairs)), home)
    assert from_parquet.dataset_version == from_csv.dataset_version


def test_gzipped_csv(write_file, home):
    plain = ingest_file(write_file("a.csv", csv_text(good_pairs())), home)
    gz = ingest_file(write_file("a.csv.gz", csv_text(good_pairs())), home)
    check_counts(gz, len(GOOD), 0)
    assert gz.dataset_version == plain.dataset_version


def test_rows_read_always_equals_accepted_plus_quarantined(write_file, home):
    rng = random.Random(1)
    bad = [("", "392410"), ("PLASTIC CUPS", "ABC"), ("X" * 3000, "392410"), ("CUPS", "12")]
    rows = good_pairs() * 3 + bad * 2
    rng.shuffle(rows)
    report = ingest_file(write_file("mix.csv", csv_text(rows)), home)
    check_counts(report, len(GOOD) * 3, 8)
    assert sum(report.quarantine_reasons.values()) == report.quarantined
    entries = quarantine(report)
    assert len(entries) == 8
    assert all({"source", "row", "reason", "message", "record"} <= set(e) for e in entries)
    expected_rows = [i + 1 for i, row in enumerate(rows) if row in bad]
    assert [e["row"] for e in entries] == expected_rows


def test_all_rows_bad_gives_no_dataset(write_file, home):
    report = ingest_file(write_file("bad.csv", csv_text([("CUPS", "ABC"), ("", "392410")])), home)
    check_counts(report, 0, 2)
    assert report.dataset_version is None and report.new_version is False
    assert len(quarantine(report)) == 2


def test_same_data_twice_gives_one_version(write_file, home):
    path = write_file("a.csv", csv_text(good_pairs() + [("CUPS", "ABC")]))
    first = ingest_file(path, home)
    second = ingest_file(path, home)
    assert first.new_version is True and second.new_version is False
    assert second.dataset_version == first.dataset_version
    assert second.quarantine_file == first.quarantine_file
    assert len(quarantine(second)) == 1  # rewritten, not appended
    assert [p.name for p in datasets_root(home).iterdir()] == [first.dataset_version]


def test_csv_jsonl_and_shuffled_rows_give_the_same_version(write_file, home):
    pairs = good_pairs()
    shuffled = pairs[::-1][1:] + pairs[-1:]
    reports = [
        ingest_file(write_file("a.csv", csv_text(pairs)), home),
        ingest_file(write_file("a.jsonl", jsonl_text(pairs)), home),
        ingest_file(write_file("b.csv", csv_text(shuffled)), home),
        ingest_file(write_file("c.jsonl", jsonl_text(shuffled, keys=("goods_description", "hs_code"))), home),
    ]
    assert len({r.dataset_version for r in reports}) == 1
    assert [r.new_version for r in reports] == [True, False, False, False]


def test_different_data_gives_a_new_version(write_file, home):
    a = ingest_file(write_file("a.csv", csv_text(good_pairs())), home)
    b = ingest_file(write_file("b.csv", csv_text(good_pairs()[:-1])), home)
    assert a.dataset_version != b.dataset_version and b.new_version is True


def test_dataset_folder_is_complete(write_file, home):
    report = ingest_file(write_file("a.csv", csv_text(good_pairs())), home)
    root = datasets_root(home)
    assert [p.name for p in root.iterdir()] == [report.dataset_version]  # no .staging-* left
    folder = root / report.dataset_version
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "rows.parquet"]
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert meta["source"] == "a.csv" and meta["rows"] == len(GOOD) and len(meta["source_sha256"]) == 64


def test_progress_is_reported(write_file, home):
    rows = [(f"PLASTIC CUPS {i}", "392410") for i in range(10_001)]
    seen = []
    report = ingest_file(write_file("p.csv", csv_text(rows)), home, on_progress=seen.append)
    check_counts(report, 10_001, 0)
    assert seen == [5000, 10000]


@pytest.mark.skipif(_config.corpus_path() is None, reason="customs corpus not present")
def test_real_corpus(home):
    report = ingest_file(_config.corpus_path(), home)
    assert report.rows_read == report.accepted + report.quarantined
    assert 55_000 <= report.rows_read <= 60_000
    assert report.quarantined / report.rows_read < 0.01
    assert 2_300 <= report.classes_hs6 <= 2_500
    ds = load_dataset(home, report.dataset_version)
    assert len(ds) == report.accepted
    split_of_group: dict[str, set[str]] = {}
    for text, split in zip(ds.texts, ds.splits):
        split_of_group.setdefault(group_key(text), set()).add(split)
    assert all(len(s) == 1 for s in split_of_group.values())
    shares = {s: ds.splits.count(s) / len(ds) for s in ("train", "dev", "test")}
    assert 0.7 < shares["train"] < 0.9 and 0.05 < shares["dev"] < 0.15 and 0.05 < shares["test"] < 0.15
