"""A file found equal to its manifest entry is not hashed again while it is unchanged
(``outdir.read_checked`` / ``known_intact``), and any change to it is seen."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from evalkit import outdir
from evalkit.outdir import fingerprint_entry, read_checked

from .test_history import make_series


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Count outdir's hashing calls by the content hashed."""
    seen: Counter = Counter()
    real = outdir.fingerprint_file

    def counted(fh, size, kind=None):  # noqa: ANN001, ANN202
        fh.seek(0)
        seen[hashlib.sha256(fh.read()).hexdigest()] += 1
        return real(fh, size, kind)

    monkeypatch.setattr(outdir, "fingerprint_file", counted)
    return seen


def test_read_checked_hashes_an_unchanged_file_once_and_sees_every_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    f = tmp_path / "t.bin"
    f.write_bytes(b"x" * 5000)
    entry = fingerprint_entry(f, "sha256")
    assert sum(calls.values()) == 1
    assert read_checked(f, entry) == b"x" * 5000
    assert read_checked(f, entry) == b"x" * 5000
    assert sum(calls.values()) == 2  # the entry's own hash, then one check; the second is known
    # the same size, its modification time set back: the change time still moves, so it is hashed
    st = f.stat()
    f.write_bytes(b"y" * 5000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert read_checked(f, entry) is None
    # back to the recorded content: equal again (hashed again, the file changed)
    f.write_bytes(b"x" * 5000)
    assert read_checked(f, entry) == b"x" * 5000
    # another entry for the same file is not taken as known
    other = dict(entry, fingerprint="0" * 32)
    assert read_checked(f, other) is None
    # a file replaced by another (new inode), same bytes and times: hashed, found equal
    g = tmp_path / "g.bin"
    g.write_bytes(b"x" * 5000)
    os.replace(g, f)
    before = sum(calls.values())
    assert read_checked(f, entry) == b"x" * 5000
    assert sum(calls.values()) == before + 1


def test_nightly_history_hashes_each_file_of_the_previous_history_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalkit.trend import history

    paths = make_series(tmp_path / "reports", 8, seed=3, manifest=True)
    out = tmp_path / "hist"
    history(paths[:-1], out=out, plots=False)
    previous = json.loads((out / outdir.MANIFEST_NAME).read_text())["files"]
    contents = {hashlib.sha256((out / rel).read_bytes()).hexdigest(): rel for rel in previous}
    calls = _counting(monkeypatch)
    tonight = history(paths, out=out, overwrite=True, plots=False)
    assert tonight.reused_runs == 7
    twice = {contents[h]: n for h, n in calls.items() if h in contents and n > 1}
    assert twice == {}
    # and the check that --overwrite replaces only what evalkit wrote still sees an edit
    month = next(rel for rel in previous if rel.startswith("by_region/"))
    p = out / month
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(outdir.OutputExistsError):
        history(paths, out=out, overwrite=True, plots=False)
