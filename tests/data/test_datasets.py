import json

import pyarrow.parquet as pq
import pytest

from hsops.data import datasets
from hsops.data.datasets import (
    DatasetNotFound,
    dataset_version,
    datasets_root,
    list_versions,
    load_dataset,
    save_dataset,
)
from hsops.data.readers import RawRow
from hsops.data.splits import assign_split
from hsops.data.validation import validate_row

from .rows import GOOD


def labeled(pairs):
    return [validate_row(RawRow(i, t, c, {})) for i, (t, c) in enumerate(pairs, 1)]


ROWS = labeled((t, c) for t, c, _ in GOOD)


def test_version_ignores_order_and_row_numbers():
    shuffled = labeled(reversed([(t, c) for t, c, _ in GOOD]))
    assert dataset_version(ROWS) == dataset_version(shuffled)
    assert dataset_version(ROWS).startswith("ds-")


def test_version_depends_on_texts_codes_and_duplicates():
    base = dataset_version(ROWS)
    assert dataset_version(ROWS[:-1]) != base
    assert dataset_version(ROWS + ROWS[:1]) != base
    changed_code = labeled([(GOOD[0][0], "3924900000")] + [(t, c) for t, c, _ in GOOD[1:]])
    assert dataset_version(changed_code) != base
    # the same code written differently is the same data
    respelled = labeled([(t, full) for t, _, full in GOOD])
    assert dataset_version(respelled) == base


def test_save_and_load_round_trip(tmp_path):
    version, new = save_dataset(tmp_path, ROWS, {"source": "x.csv"})
    assert new is True
    folder = datasets_root(tmp_path) / version
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "rows.parquet"]
    ds = load_dataset(tmp_path, version)
    assert len(ds) == len(GOOD)
    assert ds.texts == [r.text for r in ROWS]
    assert ds.codes == [full for _, _, full in GOOD]
    assert ds.hs6 == [full[:6] for _, _, full in GOOD]
    assert ds.splits == [assign_split(r.text) for r in ROWS]
    assert ds.meta["source"] == "x.csv" and ds.meta["version"] == version
    assert ds.meta["rows"] == len(GOOD)
    assert sum(ds.meta["split_rows"].values()) == len(GOOD)
    assert ds.meta["classes_hs6"] == len({full[:6] for _, _, full in GOOD})
    table = pq.read_table(folder / "rows.parquet")
    assert table.column("source_row").to_pylist() == list(range(1, len(GOOD) + 1))


def test_part_returns_texts_and_hs6_of_one_split(tmp_path):
    version, _ = save_dataset(tmp_path, ROWS, {})
    ds = load_dataset(tmp_path, version)
    total = 0
    for split in ("train", "dev", "test"):
        texts, labels = ds.part(split)
        assert len(texts) == len(labels) == ds.splits.count(split)
        assert all(len(label) == 6 for label in labels)
        total += len(texts)
    assert total == len(ds)


def test_saving_again_stores_nothing_new(tmp_path):
    version, _ = save_dataset(tmp_path, ROWS, {"source": "first"})
    again, new = save_dataset(tmp_path, list(reversed(ROWS)), {"source": "second"})
    assert (again, new) == (version, False)
    assert load_dataset(tmp_path, version).meta["source"] == "first"
    assert [p.name for p in datasets_root(tmp_path).iterdir()] == [version]


def test_failed_write_leaves_no_staging_and_no_version(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(tmp_path, ROWS, {})
    assert list(datasets_root(tmp_path).iterdir()) == []
    assert list_versions(tmp_path) == []


def test_half_written_folder_is_not_a_version(tmp_path):
    (datasets_root(tmp_path) / "ds-0000").mkdir(parents=True)
    assert list_versions(tmp_path) == []
    version, new = save_dataset(tmp_path, ROWS, {})
    assert new and list_versions(tmp_path) == [version]


def test_list_versions(tmp_path):
    assert list_versions(tmp_path) == []
    first, _ = save_dataset(tmp_path, ROWS[:3], {})
    second, _ = save_dataset(tmp_path, ROWS[3:], {})
    assert set(list_versions(tmp_path)) == {first, second}


def test_unknown_version_names_the_known_ones(tmp_path):
    with pytest.raises(DatasetNotFound, match="known: none"):
        load_dataset(tmp_path, "ds-missing")
    version, _ = save_dataset(tmp_path, ROWS, {})
    with pytest.raises(DatasetNotFound, match=version):
        load_dataset(tmp_path, "ds-missing")


def test_metadata_is_plain_json(tmp_path):
    version, _ = save_dataset(tmp_path, ROWS, {"source": "x.csv", "note": None})
    meta = json.loads((datasets_root(tmp_path) / version / "dataset.json").read_text(encoding="utf-8"))
    assert meta["note"] is None and meta["rows"] == len(ROWS)
