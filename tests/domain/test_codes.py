import pytest

from hsops.domain.codes import HSCode, InvalidCode, normalise_code
from hsops.domain.nomenclature import nomenclature


@pytest.mark.parametrize("value", ["3924.10", "392410", " 3924.10 ", "3924-10", "3924 10"])
def test_six_digit_forms_give_the_subheading(value):
    code = normalise_code(value)
    assert code.full == "392410"
    assert (code.hs6, code.hs4, code.hs2) == ("392410", "3924", "39")
    assert code.in_hs2022 is True


def test_spaced_national_code_keeps_every_digit():
    code = normalise_code("3924 10 00 00")
    assert code.full == "3924100000"
    assert code.hs6 == "392410"


def test_nine_digits_get_their_leading_zero_back():
    code = normalise_code("603110000")
    assert code.full == "0603110000"
    assert code.hs6 == "060311"
    assert code.hs2 == "06"


def test_integer_input_with_lost_leading_zero():
    assert normalise_code(603110000).full == "0603110000"


@pytest.mark.parametrize("value, full", [
    ("39241000", "39241000"),
    ("3924.10.00", "39241000"),
    ("3924100000", "3924100000"),
    ("3924.10.00.00", "3924100000"),
    ("842131000000", "842131000000"),  # 12 digits: the longest national schedules
])
def test_national_codes_keep_the_full_code(value, full):
    code = normalise_code(value)
    assert code.full == full
    assert code.hs6 == full[:6]


@pytest.mark.parametrize("value, shown", [
    ("ABC", "'ABC'"),
    ("12", "'12'"),
    ("9999.99", "'9999.99'"),  # Comtrade's "not specified" placeholder, not an HS code
    ("7701.10", "'7701.10'"),  # chapter 77 is reserved
    ("39241", "'39241'"),  # 5 digits: ambiguous
    ("3924100000001", "'3924100000001'"),  # 13 digits
    ("39241000000012345", "'39241000000012345'"),
    ("3924.1O", "'3924.1O'"),  # letter O, not zero
])
def test_bad_codes_are_rejected_showing_the_value(value, shown):
    with pytest.raises(InvalidCode) as excinfo:
        normalise_code(value)
    assert shown in str(excinfo.value)


@pytest.mark.parametrize("value", ["", "   ", None])
def test_missing_or_empty_code_is_rejected(value):
    with pytest.raises(InvalidCode, match="missing|empty"):
        normalise_code(value)


@pytest.mark.parametrize("value", [3924.10, True, ["392410"], b"392410"])
def test_non_text_values_are_rejected_with_their_type(value):
    with pytest.raises(InvalidCode, match=type(value).__name__):
        normalise_code(value)


def test_invalid_code_is_a_value_error():
    assert issubclass(InvalidCode, ValueError)


def test_unknown_heading_in_a_known_chapter_is_rejected():
    assert not nomenclature().exists("3927")
    with pytest.raises(InvalidCode, match="heading 3927"):
        normalise_code("392710")


def test_subheading_from_an_older_edition_is_accepted_and_flagged():
    # 8517.12 (mobile phones) was split into 8517.13/8517.14 in HS 2022
    nom = nomenclature()
    assert nom.exists("8517") and not nom.exists("851712")
    code = normalise_code("8517.12.00")
    assert code.full == "85171200"
    assert code.hs6 == "851712"
    assert code.in_hs2022 is False


def test_code_is_a_small_readable_value_object():
    code = normalise_code("3924.10.00")
    assert code == HSCode("39241000", True)
    assert "39241000" in repr(code) and "392410" in repr(code)
    with pytest.raises(AttributeError):
        code.full = "000000"  # frozen


def test_spreadsheet_float_is_read_as_the_number_it_was():
    # "90121.0" is the number 90121 (coffee 0901.21 that lost its zero), not 9012.10
    with pytest.raises(InvalidCode, match="5 digits"):
        normalise_code("90121.0")
    assert normalise_code("3924100000.0").full == "3924100000"
    assert normalise_code("3924.10").hs6 == "392410"  # a real dotted code is unchanged
