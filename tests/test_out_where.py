"""Where a report may be written (``--out`` / ``out=`` / ``result.write``): a local directory,
never a URL (T19), never a mount point itself (T21), never where an input glob would read
it back (T25). Each is refused up front, before any work, with what to do instead."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import UsageError

from .test_history import make_series


def _cli(*args: object) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"prob_a": [0.7, 0.2, 0.4, 0.9], "prob_b": [0.3, 0.8, 0.6, 0.1],
                         "label": ["a", "b", "b", "a"]})


# -- T19: a URL is no output directory -----------------------------------------------------

URLS = ["s3://my-bucket/reports/night1", "gs://b/r", "memory://x/report", "abfs://c/r", "https://h/r"]


@pytest.mark.parametrize("url", URLS)
def test_cli_out_url_is_refused_and_nothing_is_written_locally(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.chdir(tmp_path)
    preds = wide_file[0]
    code, out = _cli("evaluate", preds, "--out", url, "--no-plots", "-q")
    assert code == 2, out
    assert f"--out {url}: is a URL" in out and "local directory" in out and "upload" in out
    runs = make_series(tmp_path / "runs", n_runs=3)
    code, out = _cli("history", *runs, "--out", url, "--no-plots", "-q")
    assert code == 2 and "is a URL" in out, out
    code, out = _cli("compare", runs[0], runs[1], "--out", url, "-q")
    assert code == 2 and "is a URL" in out, out
    scheme = url.split("://")[0]
    assert not (tmp_path / f"{scheme}:").exists()  # was: a local directory named 's3:'


def test_s3_out_says_how_to_upload(tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _cli("evaluate", wide_file[0], "--out", "s3://b/night1", "-q")
    assert code == 2 and "aws s3 sync report s3://b/night1" in out, out


@pytest.mark.parametrize("url", URLS)
def test_api_out_url_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="is a URL"):
        evalkit.evaluate(_frame(), out=url)
    result = evalkit.evaluate(_frame())
    with pytest.raises(UsageError, match="is a URL"):
        result.write(url)
    with pytest.raises(UsageError, match="is a URL"):
        evalkit.run({"input": str(tmp_path / "none.parquet"), "out": url})
    runs = make_series(tmp_path / "runs", n_runs=3)
    with pytest.raises(UsageError, match="is a URL"):
        evalkit.history(runs, out=url, plots=False)
    assert sorted(os.listdir(tmp_path)) == ["runs"]


def test_file_url_out_is_the_local_directory(tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch) -> None:
    """``file://`` names a local path, for --out as for inputs."""
    monkeypatch.chdir(tmp_path)
    code, out = _cli("evaluate", wide_file[0], "--out", f"file://{tmp_path}/rep", "--no-plots", "-q")
    assert code == 0, out
    assert (tmp_path / "rep" / "report.md").is_file()
    assert not (tmp_path / "file:").exists()
    runs = make_series(tmp_path / "runs", n_runs=3)
    evalkit.history(runs, out=f"file://{tmp_path}/hist", plots=False)
    assert (tmp_path / "hist" / "history.md").is_file()


# -- T21: a mount point cannot be replaced: give a directory inside it -----------------------

def _unshare_ok() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || exit 1"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _unshare_ok(), reason="needs a private mount namespace (unshare -m, as root)")
@pytest.mark.parametrize("mount", ["mount -t tmpfs tmpfs {mnt}", "mount --bind {src} {mnt}"])
def test_out_that_is_a_mount_point_is_refused_up_front(tmp_path: Path, wide_file, mount: str) -> None:
    """A tmpfs volume (os.path.ismount) and a bind mount of a directory of the same file
    system (which ismount cannot see) alike; a directory inside the mount point works."""
    import shlex
    import subprocess
    import sys

    mnt, src = tmp_path / "mnt", tmp_path / "src"
    mnt.mkdir()
    src.mkdir()
    tree = str(Path(evalkit.__file__).resolve().parent.parent)
    ek = f"PYTHONPATH={shlex.quote(tree)} {shlex.quote(sys.executable)} -m evalkit"
    preds = shlex.quote(str(wide_file[0]))
    script = (f"{mount.format(mnt=shlex.quote(str(mnt)), src=shlex.quote(str(src)))} && cd {shlex.quote(str(tmp_path))} && "
              f"{{ {ek} evaluate {preds} --out mnt --no-plots -q; echo rc=$?; }} && "
              f"{{ {ek} evaluate {preds} --out mnt/run --no-plots -q >/dev/null; echo rc=$?; }} && ls -A mnt")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert "rc=2" in out and "--out mnt: is a mount point" in out and "--out mnt/run" in out, out
    assert "rc=0" in out, out
    assert r.stdout.split("rc=0")[-1].split() == ["run"], out  # nothing left beside the report


def test_is_mount_point() -> None:
    from evalkit.outdir import is_mount_point

    assert is_mount_point("/")
    assert not is_mount_point(Path(evalkit.__file__).parent)


def test_a_busy_rename_names_the_mount_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a mount point is not recognised up front, the failed swap (EBUSY) says why."""
    import errno

    from evalkit import outdir
    from evalkit.errors import OutputError

    target = tmp_path / "vol"
    target.mkdir()
    monkeypatch.setattr(outdir, "is_mount_point", lambda path: False)
    real = os.rename

    def rename(a, b):  # noqa: ANN001, ANN202
        if target in (Path(a), Path(b)):  # a mount point can be neither moved nor replaced
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real(a, b)

    monkeypatch.setattr(outdir.os, "rename", rename)
    with pytest.raises(OutputError, match="a mount point cannot be replaced; give a directory inside it"):
        evalkit.evaluate(_frame()).write(target)


# -- T25: --out where an input glob would read the report back ---------------------------------

@pytest.mark.parametrize(("pattern", "out"), [
    ("gl/**/*.parquet", "gl/report"), ("gl/*/*.parquet", "gl/report"), ("gl/*", "gl/report"),
    ("gl/*/*", "gl/nightly/2026-12-01"), ("**/*.parquet", "report"), ("{tmp}/gl/**/*.parquet", "gl/report"),
    ("gl/**/*.parquet", "{tmp}/gl/report"), ("gl/**/*.md", "gl/report"),
])
def test_out_that_an_input_glob_would_match_is_refused_on_the_first_run(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch, pattern: str, out: str) -> None:
    """Accepted, the first night passed and every later one failed (the report's Parquet
    files matched the glob: not an input's columns, or --out 'a parent of the input')."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gl" / "a").mkdir(parents=True)
    os.replace(wide_file[0], tmp_path / "gl" / "a" / "x.parquet")
    pattern, out = pattern.format(tmp=tmp_path), out.format(tmp=tmp_path)
    code, text = _cli("evaluate", pattern, "--out", out, "--no-plots", "-q")
    assert code == 2, text
    assert f"the input glob {pattern} would match the report" in text and "narrow the glob" in text, text
    assert not Path(out).exists()
    with pytest.raises(UsageError, match="would match the report"):
        evalkit.evaluate(pattern, out=out)
    with pytest.raises(UsageError, match="labels input glob"):
        evalkit.evaluate("gl/a/x.parquet", labels=pattern, on="id", out=out)


@pytest.mark.parametrize(("pattern", "out"), [
    ("gl/*/x.parquet", "gl/report"), ("gl/a/*.parquet", "gl/report"), ("**/x.parquet", "gl/report"),
    ("gl/*.parquet", "gl/report"), ("gl/**/*.parquet", "reports/night"), ("gl/**/*.parquet", "gl/.report"),
])
def test_out_beside_a_glob_that_cannot_match_the_report_is_accepted_night_after_night(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch, pattern: str, out: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gl" / "a").mkdir(parents=True)
    os.replace(wide_file[0], tmp_path / "gl" / "a" / "x.parquet")
    if pattern == "gl/*.parquet":
        os.replace(tmp_path / "gl" / "a" / "x.parquet", tmp_path / "gl" / "x.parquet")
    for night in range(2):
        code, text = _cli("evaluate", pattern, "--out", out, "--overwrite", "-q", "--format", "none")
        assert code == 0, (night, text)
    assert (Path(out) / "rows.parquet").is_file()
