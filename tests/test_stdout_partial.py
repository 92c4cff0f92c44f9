"""stdout that takes a large write only in part (a disk filling up behind ``> file``): the
command must say so and exit 4, not exit 0 with a cut JSON or Markdown document
(rt-main10 F1: CPython's buffered writer dropped the rest of a partial write silently).
A file size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ) makes the system take the first
bytes of a write and refuse the rest (EFBIG), as a full disk does, without root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import evalkit

resource = pytest.importorskip("resource")
SAMPLE = Path(evalkit.__file__).resolve().parent.parent / "sample_data" / "digits.parquet"


def _limited(args: list[str], out: Path, limit: int) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).resolve().parent.parent)}
    with open(out, "wb") as fh:
        return subprocess.run([sys.executable, "-m", "evalkit", *args], stdout=fh, stderr=subprocess.PIPE,
                              env=env, timeout=300, check=False,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                                    (limit, resource.RLIM_INFINITY)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE partial writes: Linux")
@pytest.mark.parametrize("args", [["evaluate", str(SAMPLE), "--format", "json"],
                                  ["evaluate", str(SAMPLE), "--format", "markdown"],
                                  ["inspect", "WIDE", "--format", "json"]],
                         ids=["evaluate-json", "evaluate-markdown", "inspect-json"])
def test_a_partly_written_stdout_is_exit_4(tmp_path: Path, args: list[str]):
    if "WIDE" in args:  # a file whose description is long
        import numpy as np
        import pandas as pd

        p = np.full((20, 300), 1 / 300)
        pd.DataFrame({**{f"prob_{i}": p[:, i] for i in range(300)}, "label": np.arange(20) % 300}
                     ).to_parquet(tmp_path / "wide.parquet")
        args = [str(tmp_path / "wide.parquet") if a == "WIDE" else a for a in args]
    whole = _limited(args, tmp_path / "whole.txt", resource.RLIM_INFINITY)
    size = (tmp_path / "whole.txt").stat().st_size
    assert whole.returncode == 0 and size > 2000, whole.stderr.decode()
    cut = _limited(args, tmp_path / "cut.txt", size // 2)
    err = cut.stderr.decode()
    assert (tmp_path / "cut.txt").stat().st_size == size // 2  # the system took half
    assert cut.returncode == 4, err
    assert "error: could not write to standard output" in err and "Traceback" not in err


def test_whole_writes_loop_over_partial_writes_and_raise_the_error(monkeypatch):
    """The writer under stdout: a write the system takes in parts is written whole; a
    failing write raises (nothing dropped silently)."""
    import io

    from evalkit import cli_common

    r, w = os.pipe()
    calls = []
    real = os.write

    def partial(fd, data):  # 1,000 bytes a call; no room after 10,000
        if 1000 * len(calls) >= 10_000:
            raise OSError(28, "No space left on device")
        calls.append(len(data))
        return real(fd, bytes(data[:1000]))

    monkeypatch.setattr(cli_common.os, "write", partial)
    out = io.TextIOWrapper(io.BufferedWriter(cli_common._WholeWrites(w)), encoding="utf-8")
    out.write("x" * 5000)
    out.flush()
    assert os.read(r, 10_000) == b"x" * 5000 and len(calls) == 5
    with pytest.raises(OSError, match="No space"):
        out.write("y" * 20_000)
        out.flush()
    assert os.read(r, 100_000) == b"y" * 5000  # what the system took, then the error
    os.close(r)
    os.close(w)
