import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hsops.data.readers import DataFileError, detect_format, read_table

from .rows import GOOD, csv_text, good_pairs, jsonl_text


def read(path, **kw):
    return list(read_table(path, **kw))


def good_texts():
    return [text for text, _, _ in GOOD]


# -- the file as a whole ----------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        read(tmp_path / "nope.csv")


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.parquet", "empty.tsv"])
def test_empty_file(write_file, name):
    with pytest.raises(DataFileError, match="empty"):
        read(write_file(name, b""))


def test_gzip_of_nothing_is_empty(write_file):
    with pytest.raises(DataFileError, match="empty"):
        read(write_file("empty.csv.gz", b""))


@pytest.mark.parametrize("content", ["description,hs_code\n", "description,hs_code\r\n",
                                     "description,hs_code", "description,hs_code\n\n\n"])
def test_header_only(write_file, content):
    with pytest.raises(DataFileError, match="header but no data rows"):
        read(write_file("h.csv", content))


def test_blank_first_line(write_file):
    with pytest.raises(DataFileError, match="blank"):
        read(write_file("b.csv", ",\nPLASTIC CUPS,392410\n"))


def test_jsonl_with_only_blank_lines(write_file):
    with pytest.raises(DataFileError, match="no rows"):
        read(write_file("b.jsonl", "\n  \n\n"))


def test_named_column_missing_lists_available_columns(write_file):
    path = write_file("c.csv", csv_text(good_pairs(), header=("item", "tariff")))
    with pytest.raises(DataFileError) as excinfo:
        read(path, text_column="description", label_column="tariff")
    message = str(excinfo.value)
    assert "'description'" in message
    assert "item" in message and "tariff" in message


def test_undetectable_columns_list_available_columns_and_the_flag(write_file):
    path = write_file("c.csv", csv_text(good_pairs(), header=("item", "tariff")))
    with pytest.raises(DataFileError) as excinfo:
        read(path)
    message = str(excinfo.value)
    assert "['item', 'tariff']" in message
    assert "--text-column" in message


def test_missing_code_column_names_its_flag(write_file):
    path = write_file("c.csv", csv_text(good_pairs(), header=("description", "tariff")))
    with pytest.raises(DataFileError, match="--label-column") as excinfo:
        read(path)
    assert "tariff" in str(excinfo.value)


def test_explicit_columns(write_file):
    path = write_file("c.csv", csv_text(good_pairs(), header=("item", "tariff")))
    rows = read(path, text_column="item", label_column="tariff")
    assert [(r.text, r.label) for r in rows] == good_pairs()


def test_auto_detects_the_corpus_columns(write_file):
    header = ("row_id", "goods_description", "hs_code", "hs6", "tariff_line_description")
    rows = [(i, text, code, code[:6], "LABEL-DERIVED TEXT") for i, (text, code) in enumerate(good_pairs())]
    got = read(write_file("corpus.csv", csv_text(rows, header=header)))
    assert [(r.text, r.label) for r in got] == good_pairs()  # not hs6, not the tariff text
    assert [r.number for r in got] == list(range(1, len(GOOD) + 1))
    assert got[0].record["tariff_line_description"] == "LABEL-DERIVED TEXT"


def test_auto_detection_ignores_case_and_padding(write_file):
    got = read(write_file("c.csv", csv_text(good_pairs(), header=(" Goods_Description ", "HS_CODE"))))
    assert [(r.text, r.label) for r in got] == good_pairs()


@pytest.mark.parametrize("name", ["data.xlsx", "data.txt", "data.gz"])
def test_unknown_format(tmp_path, name):
    with pytest.raises(DataFileError, match=r"\.csv"):
        detect_format(tmp_path / name)


@pytest.mark.parametrize("name, fmt", [("a.csv", "csv"), ("A.CSV.GZ", "csv"), ("a.tsv", "tsv"),
                                       ("a.jsonl", "jsonl"), ("a.ndjson.gz", "jsonl"),
                                       ("a.parquet", "parquet")])
def test_detect_format(tmp_path, name, fmt):
    assert detect_format(tmp_path / name) == fmt


def test_explicit_format_overrides_the_name(write_file):
    path = write_file("export.txt", csv_text(good_pairs()))
    assert len(read(path, fmt="csv")) == len(GOOD)
    with pytest.raises(DataFileError, match="unknown format"):
        read(path, fmt="xlsx")


# -- bad rows come out flagged, good rows go on -----------------------------------------

def test_non_utf8_row_is_flagged_and_the_rest_read(write_file):
    lines = [b"description,hs_code"] + [f"{t},{c}".encode() for t, c in good_pairs()[:3]]
    lines.insert(2, b"CAF\xc9 AU LAIT MACHINE \xff,851671")  # Latin-1 bytes
    rows = read(write_file("l1.csv", b"\n".join(lines) + b"\n"))
    assert len(rows) == 4
    bad = rows[1]
    assert bad.number == 2 and "UTF-8" in bad.problem
    assert "\\xc9" in bad.record["description"]  # shown, not lost
    assert [r.text for r in rows if r.problem is None] == good_texts()[:3]


def test_header_with_non_utf8_bytes_is_printable(write_file):
    content = b"description,hs_code,pr\xe9cis\nPLASTIC CUPS,392410,x\n"
    (row,) = read(write_file("h.csv", content))
    assert row.problem is None
    assert list(row.record) == ["description", "hs_code", "pr\\xe9cis"]


def test_byte_order_mark_is_not_part_of_the_first_column(write_file):
    content = "\ufeff" + csv_text(good_pairs())
    rows = read(write_file("bom.csv", content))
    assert [(r.text, r.label) for r in rows] == good_pairs()
    assert "description" in rows[0].record


def test_crlf_reads_the_same_rows_as_lf(write_file):
    lf = read(write_file("lf.csv", csv_text(good_pairs())))
    crlf = read(write_file("crlf.csv", csv_text(good_pairs(), newline="\r\n")))
    assert [(r.text, r.label) for r in crlf] == [(r.text, r.label) for r in lf] == good_pairs()


def test_row_with_too_many_or_too_few_fields(write_file):
    content = csv_text(good_pairs()[:2]) + "PLASTIC CUPS,392410,EXTRA\nLONELY FIELD\n" + \
        csv_text(good_pairs()[2:4]).split("\n", 1)[1]
    rows = read(write_file("f.csv", content))
    assert [r.number for r in rows] == [1, 2, 3, 4, 5, 6]
    assert "3 fields" in rows[2].problem and "header has 2" in rows[2].problem
    assert rows[2].record == {"fields": ["PLASTIC CUPS", "392410", "EXTRA"]}
    assert "1 fields" in rows[3].problem
    assert [r.text for r in rows if r.problem is None] == good_texts()[:4]


def test_blank_lines_are_not_rows(write_file):
    content = csv_text(good_pairs()[:2]) + "\n\n" + csv_text(good_pairs()[2:3]).split("\n", 1)[1]
    rows = read(write_file("b.csv", content))
    assert [r.number for r in rows] == [1, 2, 3]
    assert all(r.problem is None for r in rows)


def test_quoted_commas_and_line_breaks_stay_in_one_field(write_file):
    rows = read(write_file("q.csv", 'description,hs_code\n"CUPS, PLATES\nAND BOWLS",392410\nWASHER,731822\n'))
    assert [(r.text, r.label) for r in rows] == [("CUPS, PLATES\nAND BOWLS", "392410"), ("WASHER", "731822")]


def test_a_megabyte_field_is_read_not_fatal(write_file):
    big = "X" * 1_000_000
    rows = read(write_file("big.csv", csv_text([(big, "392410"), ("WASHER", "731822")])))
    assert len(rows[0].text) == 1_000_000
    assert rows[1].text == "WASHER"


def test_tsv(write_file):
    content = "description\ths_code\n" + "".join(f"{t}\t{c}\n" for t, c in good_pairs())
    assert [(r.text, r.label) for r in read(write_file("a.tsv", content))] == good_pairs()


def test_gzipped_csv(write_file):
    rows = read(write_file("a.csv.gz", csv_text(good_pairs())))
    assert [(r.text, r.label) for r in rows] == good_pairs()


# -- JSONL ----------------------------------------------------------------------------------

def test_jsonl_malformed_and_non_object_lines(write_file):
    lines = jsonl_text(good_pairs()[:2]).splitlines()
    lines[1:1] = ['{"description": "BROKEN', '["PLASTIC CUPS", "392410"]', '"just a string"', ""]
    rows = read(write_file("a.jsonl", "\n".join(lines) + "\n"))
    assert [r.number for r in rows] == [1, 2, 3, 4, 5]
    assert "not valid JSON" in rows[1].problem
    assert rows[1].record == {"line": '{"description": "BROKEN\n'}
    assert "must be an object" in rows[2].problem
    assert "must be an object" in rows[3].problem
    assert [(r.text, r.label) for r in rows if r.problem is None] == good_pairs()[:2]


def test_jsonl_numbers_and_nulls_pass_through_for_validation(write_file):
    content = '{"description": "PLASTIC CUPS", "hs_code": 3924100000}\n' \
              '{"description": null, "hs_code": "392410"}\n{"description": "WASHER"}\n'
    rows = read(write_file("a.jsonl", content))
    assert [(r.text, r.label) for r in rows] == [("PLASTIC CUPS", 3924100000), (None, "392410"), ("WASHER", None)]
    assert all(r.problem is None for r in rows)


def test_jsonl_non_utf8_line(write_file):
    content = jsonl_text(good_pairs()[:1]).encode() + b'{"description": "CAF\xc9", "hs_code": "090121"}\n'
    rows = read(write_file("a.jsonl", content))
    assert rows[0].problem is None
    assert "UTF-8" in rows[1].problem and "\\xc9" in rows[1].record["line"]


def test_jsonl_unpaired_surrogate_escape_is_flagged(write_file):
    content = '{"description": "CUPS \\ud800", "hs_code": "392410"}\n' \
              '{"description": "SMILE \\ud83d\\ude00 MUGS", "hs_code": "691200"}\n'
    rows = read(write_file("s.jsonl", content))
    assert "unpaired surrogate" in rows[0].problem
    assert rows[1].problem is None and rows[1].text == "SMILE \U0001F600 MUGS"


def test_jsonl_crlf_and_bom(write_file):
    content = "\ufeff" + jsonl_text(good_pairs()).replace("\n", "\r\n")
    rows = read(write_file("a.jsonl", content))
    assert [(r.text, r.label) for r in rows] == good_pairs()


def test_jsonl_columns_come_from_the_first_object(write_file):
    content = jsonl_text(good_pairs()[:2], keys=("title", "label"))
    with pytest.raises(DataFileError, match="--text-column"):
        read(write_file("a.jsonl", jsonl_text(good_pairs()[:1], keys=("item", "tariff"))))
    rows = read(write_file("b.jsonl", content))
    assert [(r.text, r.label) for r in rows] == good_pairs()[:2]


# -- Parquet ----------------------------------------------------------------------------

def test_parquet_numeric_codes_and_nulls(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({
        "goods_description": ["PLASTIC CUPS", None, "ROSES", "WASHER"],
        "hs_code": [3924100000.0, 8421310000.0, 603110000.0, None],
        "other": [1, 2, 3, 4],
    }), path)
    rows = read(path)
    assert [(r.text, r.label) for r in rows] == [
        ("PLASTIC CUPS", 3924100000.0), (None, 8421310000.0), ("ROSES", 603110000.0), ("WASHER", None)]
    assert [r.number for r in rows] == [1, 2, 3, 4]
    assert rows[0].record == {"goods_description": "PLASTIC CUPS", "hs_code": 3924100000.0}


def test_parquet_missing_column_lists_columns(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"item": ["X"], "hs_code": ["392410"]}), path)
    with pytest.raises(DataFileError, match=r"\['item', 'hs_code'\]"):
        read(path)


def test_parquet_without_rows(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"description": pa.array([], pa.string()), "hs_code": pa.array([], pa.string())}), path)
    with pytest.raises(DataFileError, match="no rows"):
        read(path)


def test_corrupt_parquet(write_file):
    with pytest.raises(DataFileError, match="not a readable Parquet"):
        read(write_file("a.parquet", b"PAR1 this is not parquet"))


def test_reader_is_lazy_and_counts_rows_across_batches(tmp_path):
    path = tmp_path / "a.parquet"
    n = 25_000  # more than one 10k batch
    pq.write_table(pa.table({"description": ["PLASTIC CUPS"] * n, "hs_code": ["392410"] * n}), path)
    rows = read_table(path)
    first = next(rows)
    assert first.number == 1
    assert sum(1 for _ in rows) == n - 1


def test_unclosed_quote_loses_only_its_own_row(write_file):
    content = ('description,hs_code\nPLASTIC CUPS,392410\n"BROKEN QUOTE ROW,392410\n'
               'WASHER,731822\nAIR FILTER,842131\n')
    rows = read(write_file("u.csv", content))
    assert [r.text for r in rows if r.problem is None] == ["PLASTIC CUPS", "WASHER", "AIR FILTER"]
    bad = [r for r in rows if r.problem is not None]
    assert len(bad) == 1 and "unclosed quote" in bad[0].problem


def test_unclosed_quote_on_the_last_but_one_line(write_file):
    rows = read(write_file("u2.csv", 'description,hs_code\n"BROKEN,392410\nWASHER,731822\n'))
    assert [r.text for r in rows if r.problem is None] == ["WASHER"]
    assert sum(r.problem is not None for r in rows) == 1


def test_multiline_quoted_description_with_commas_is_one_row(write_file):
    # a continuation line that looks like a row on its own must not split the record
    content = ('description,hs_code\n"ASSORTED KITCHEN LOT:\nPLASTIC BOWLS,392410\nSTEEL SPOONS",821599\n'
               'AIR FILTER,842131\n')
    rows = read(write_file("m.csv", content))
    assert [(r.text, r.label) for r in rows] == [
        ("ASSORTED KITCHEN LOT:\nPLASTIC BOWLS,392410\nSTEEL SPOONS", "821599"), ("AIR FILTER", "842131")]
    assert all(r.problem is None for r in rows)


def test_gzip_that_is_not_gzip_is_a_file_error(tmp_path):
    fake = tmp_path / "x.csv.gz"
    fake.write_bytes(b"description,hs_code\nCUPS,392410\n")
    with pytest.raises(DataFileError, match="not a valid gzip"):
        list(read_table(fake))


def test_truncated_gzip_is_a_file_error(tmp_path):
    body = "description,hs_code\n" + "".join(f"PLASTIC CUPS {i},392410\n" for i in range(20000))
    full = gzip.compress(body.encode())
    cut = tmp_path / "t.csv.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataFileError, match="truncated"):
        list(read_table(cut))


def test_latin1_file_with_encoding_option(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("description,hs_code\nCAFÉ MUGS,691200\n".encode("latin-1"))
    default = list(read_table(path))
    assert default[0].problem and "--encoding" in default[0].problem
    rows = list(read_table(path, encoding="latin-1"))
    assert rows[0].problem is None and rows[0].text == "CAFÉ MUGS"
    with pytest.raises(DataFileError, match="unknown encoding"):
        read_table(path, encoding="klingon")


def test_utf16_file_is_detected_by_its_bom(tmp_path):
    path = tmp_path / "u16.csv"
    path.write_bytes("description,hs_code\nAIR FILTER,842131\n".encode("utf-16"))
    rows = list(read_table(path))
    assert [(r.text, r.label) for r in rows] == [("AIR FILTER", "842131")]


def test_semicolon_separated_and_spaced_column_names(write_file):
    rows = read(write_file("s.csv", "Item Description;HS Code\nPLASTIC CUPS;3924.10\nWASHER;731822\n"))
    assert [(r.text, r.label) for r in rows] == [("PLASTIC CUPS", "3924.10"), ("WASHER", "731822")]
