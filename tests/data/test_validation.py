import pytest

from hsops.data.readers import RawRow
from hsops.data.validation import MAX_TEXT_CHARS, LabeledRow, Rejection, check_text, clean_text, validate_row


def raw(text, label, number=1, problem=None):
    return RawRow(number, text, label, {"description": text, "hs_code": label}, problem)


def test_clean_text_folds_space_and_control_characters():
    assert clean_text("  70CTNS\tX\r\n120 PCS\x00 CUPS  ") == "70CTNS X 120 PCS CUPS"
    assert clean_text("CAFE\u0301") == "CAF\u00c9"  # NFC


def test_accepts_a_good_row():
    row = validate_row(raw(" PLASTIC   PLATES[16CM] ", "3924.10.00.00", number=7))
    assert isinstance(row, LabeledRow)
    assert row.text == "PLASTIC PLATES[16CM]"
    assert row.code.full == "3924100000" and row.code.hs6 == "392410"
    assert row.source_row == 7


@pytest.mark.parametrize("text, reason", [
    (None, "missing_description"),
    (12345, "missing_description"),
    ("", "blank_description"),
    ("   \t ", "blank_description"),
    ("--- ...", "blank_description"),
    ("X" * (MAX_TEXT_CHARS + 1), "description_too_long"),
    ("X" * 1_000_000, "description_too_long"),
])
def test_bad_descriptions(text, reason):
    result = validate_row(raw(text, "392410", number=3))
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.source_row == 3
    assert result.message


def test_description_at_the_limit_is_accepted():
    assert isinstance(validate_row(raw("X" * MAX_TEXT_CHARS, "392410")), LabeledRow)


def test_too_long_message_gives_the_length():
    _, reason, message = check_text("Y" * 1_000_000)
    assert reason == "description_too_long"
    assert "1,000,000" in message


@pytest.mark.parametrize("label", ["ABC", "12", "9999.99", "", None, "39241", "3924100000001"])
def test_bad_codes(label):
    result = validate_row(raw("PLASTIC CUPS", label))
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_code"
    if label:
        assert repr(label) in result.message
    assert result.record == {"description": "PLASTIC CUPS", "hs_code": label}


@pytest.mark.parametrize("label, full", [(3924100000.0, "3924100000"), (603110000.0, "0603110000"),
                                         (603110000, "0603110000"), (392410, "392410")])
def test_numeric_codes_from_parquet_or_json(label, full):
    row = validate_row(raw("PLASTIC CUPS", label))
    assert isinstance(row, LabeledRow)
    assert row.code.full == full


def test_fractional_number_is_not_a_code():
    result = validate_row(raw("PLASTIC CUPS", 3924.1))
    assert isinstance(result, Rejection) and result.reason == "invalid_code"


def test_old_edition_subheading_is_accepted():
    row = validate_row(raw("MOBILE PHONE", "8517120000"))
    assert isinstance(row, LabeledRow) and row.code.in_hs2022 is False


@pytest.mark.parametrize("problem, reason", [
    ("row has bytes that are not valid utf-8-sig (pass --encoding cp1252 ...)", "not_utf8"),
    ("row has 3 fields, the header has 2", "malformed_row"),
    ("not valid JSON: Expecting value", "malformed_row"),
])
def test_reader_problems_become_reasons(problem, reason):
    result = validate_row(RawRow(4, None, None, {"line": "x"}, problem))
    assert isinstance(result, Rejection)
    assert (result.reason, result.message, result.source_row, result.record) == (reason, problem, 4, {"line": "x"})
