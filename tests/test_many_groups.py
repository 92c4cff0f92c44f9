"""Group keys of many distinct values (issue 15's groups axis): the shortcuts taken for a
Parquet reader's growing dictionaries, huge payload dictionaries in the hardest rows, and
grouped tables written without float dictionaries, each checked against the plain reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evalkit.aggregate import TopK, concat_frames
from evalkit.aggregate.keys import _KeyIndex
from evalkit.io import write_table


def _dict_batch(values: list[str], codes: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(values))


def _keys_of_rows(index: _KeyIndex, local: np.ndarray, slots: np.ndarray) -> list:
    return [index.keys[s][0] for s in slots[local]]


def test_growing_dictionaries_give_every_row_its_own_value() -> None:
    """Batches whose dictionary extends the previous one (by few values: looked up one by
    one; by many: hashed), a batch with a new dictionary, and an extension that repeats a
    value already in the dictionary (two codes of one key: read by value) all map each row
    to the slot of its value, as a fresh index of the decoded values does."""
    rng = np.random.default_rng(15)
    names = [f"user{i:05d}" for i in range(20_000)]
    dicts = [names[:3000], names[:3010], names[:9000], names[5000:12000], names[5000:12000] + ["user05003"]]
    index, plain = _KeyIndex(["user"], ()), _KeyIndex(["user"], ())
    for d in dicts:
        codes = rng.integers(0, len(d), 4000)
        if len(d) > 7000:  # the repeated value and its first copy both occur
            codes[:2] = [len(d) - 1, 3]
        col = _dict_batch(d, codes)
        local, slots = index.encode([col], len(col))
        assert len(np.unique(slots)) == len(slots)
        assert _keys_of_rows(index, local, slots) == col.to_pylist()
        plocal, pslots = plain.encode([col.dictionary_decode()], len(col))
        assert _keys_of_rows(plain, plocal, pslots) == col.to_pylist()
    assert sorted(k[0] for k in index.keys) == sorted(k[0] for k in plain.keys)
    assert len(index) == len({k[0] for k in index.keys})


def test_hardest_rows_keep_their_values_when_a_huge_payload_dictionary_is_cut() -> None:
    """A payload dictionary far longer than the candidate rows is cut to the used values:
    the hardest rows and their values are those of the same payload read as plain text, and
    the scopes' frames stay categorical when concatenated."""
    rng = np.random.default_rng(3)
    users = [f"u{i:06d}" for i in range(50_000)]
    frames = {}
    for scope, keys in (("overall", ()), ("class", ("class",))):
        cut, plain = TopK(5, keys), TopK(5, keys)
        for _ in range(3):
            n = 20_000
            loss = rng.exponential(size=n)
            cls = pa.array(rng.integers(0, 4, n).astype(str))
            col = _dict_batch(users, rng.integers(0, len(users), n))
            group = [cls] if keys else []
            cut.update(group, loss, pa.table({"row": np.arange(n), "user": col}))
            plain.update(group, loss, pa.table({"row": np.arange(n), "user": col.dictionary_decode()}))
        got, want = cut.finalize(), plain.finalize()
        assert isinstance(got["user"].dtype, pd.CategoricalDtype)
        assert len(got["user"].cat.categories) < 1000
        assert got["user"].astype(str).tolist() == want["user"].tolist()
        assert got["loss"].tolist() == want["loss"].tolist()
        frames[scope] = got
    both = concat_frames(list(frames.values()))
    assert isinstance(both["user"].dtype, pd.CategoricalDtype)
    assert both["user"].astype(str).tolist() == [*frames["overall"]["user"].astype(str),
                                                 *frames["class"]["user"].astype(str)]


def test_tables_of_statistics_are_written_without_float_dictionaries(tmp_path) -> None:
    """write_table keeps dictionaries for text and integers only (float statistics rarely
    repeat: a dictionary was built, found too big and dropped): same values read back."""
    rng = np.random.default_rng(1)
    t = pa.table({"user": [f"u{i}" for i in range(5000)], "count": rng.integers(1, 9, 5000),
                  "mean": rng.random(5000), "p50": rng.random(5000).astype(np.float32)})
    write_table(t, tmp_path / "t.parquet")
    f = pq.ParquetFile(tmp_path / "t.parquet")
    encodings = {f.schema_arrow.names[i]: f.metadata.row_group(0).column(i).encodings
                 for i in range(f.metadata.num_columns)}
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert dictionary & set(encodings["user"]) and dictionary & set(encodings["count"])
    assert not dictionary & set(encodings["mean"]) and not dictionary & set(encodings["p50"])
    assert f.read().equals(t)


def test_keys_read_by_value_stay_arrow_until_a_python_path_asks() -> None:
    """A one-column key read by value holds its keys as Arrow values only (no tuple, no dict
    entry per key while batches are encoded); the Python form is completed when asked (keys,
    a merge, a pickle, a copy, a projection) and both forms give every key the same slot,
    also when keys arrive by both paths in turn."""
    import pickle

    rng = np.random.default_rng(7)
    names = [f"user{i:05d}" for i in range(5_000)]
    index = _KeyIndex(["user"], ())
    first: dict[str, int] = {}  # slot of each value: the order of first appearance
    for lo, hi in ((0, 3000), (0, 3500), (2000, 5000)):
        d = names[lo:hi]
        col = _dict_batch(d, rng.integers(0, len(d), 4000))
        local, slots = index.encode([col], len(col))
        for v, s in zip(col.to_pylist(), slots[local].tolist(), strict=True):
            assert first.setdefault(v, s) == s
        assert index._keys == [] and len(index) == len(first)  # Arrow only so far
    want = [(v,) for v in sorted(first, key=first.__getitem__)]
    assert index.copy().keys == want and index._keys == []  # a copy completes its own
    assert pickle.loads(pickle.dumps(index)).keys == want
    assert index.keys == want and index.slot_of == {k: i for i, k in enumerate(want)}
    # Keys by the Python path (a merge), then by value again: one slot per value throughout.
    other = _KeyIndex(["user"], ())
    other.encode([pa.array(["zz1", "user00001", None])], 3)
    remap = index.merge_from(other)
    assert [index.keys[s] for s in remap] == [("zz1",), ("user00001",), (None,)]
    local, slots = index.encode([pa.array(["zz1", None, "zz2", "user04999"])], 4)
    assert [index.keys[s] for s in slots[local]] == [("zz1",), (None,), ("zz2",), ("user04999",)]
    assert slots[local][:2].tolist() == [remap[0], remap[2]]
    assert len(index) == len(set(index.keys)) == len(set(first) | {"zz1", None, "zz2", "user04999"})
    assert index.key_arrays(np.arange(len(index)))["user"].to_pylist() == [k[0] for k in index.keys]
    projected, to = index.project([0])
    assert projected.keys == index.keys and to.tolist() == list(range(len(index)))
