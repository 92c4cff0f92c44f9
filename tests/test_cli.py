"""The CLI through click's CliRunner: evaluate, inspect, formats, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from evalkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT = ROOT / "sample_data" / "sentiment"
DIGITS = ROOT / "sample_data" / "digits.parquet"
SEP = ROOT / "sample_data" / "separate_labels"


def run(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_teaches_by_example():
    r = run("--help")
    assert r.exit_code == 0 and "Examples:" in r.output and "Exit codes" in r.output
    r = run("evaluate", "--help")
    assert r.exit_code == 0 and "evalkit evaluate preds.parquet --out report/" in r.output


def test_evaluate_sample_writes_report(tmp_path: Path):
    out = tmp_path / "report"
    r = run("evaluate", SENTIMENT, "--by", "region", "--by", "split,region", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("overall: mean loss")
    assert "by split,region:" in r.output
    for f in ("report.md", "summary.json", "rows.parquet", "by_class.parquet", "by_split.parquet",
              "by_region.parquet", "by_split_region.parquet"):
        assert (out / f).exists(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metadata"]["rows_read"] == 5000
    assert set(summary["groups"]) == {"class", "split", "region", "split,region"}
    by_region = pd.read_parquet(out / "by_region.parquet")
    rows = pd.read_parquet(out / "rows.parquet")
    assert by_region.set_index("region")["mean"].to_dict() == pytest.approx(
        rows.groupby("region")["loss"].mean().to_dict(), rel=1e-12)


def test_existing_report_is_refused_then_overwritten(tmp_path: Path):
    out = tmp_path / "r"
    assert run("evaluate", DIGITS, "--out", out, "-q").exit_code == 0
    r = run("evaluate", DIGITS, "--out", out, "-q")
    assert r.exit_code == 4 and "--overwrite" in r.output and "Traceback" not in r.output
    assert run("evaluate", DIGITS, "--out", out, "-q", "--overwrite").exit_code == 0


@pytest.mark.parametrize("fmt", ["json", "markdown", "table", "none"])
def test_formats(fmt: str):
    r = CliRunner().invoke(main, ["evaluate", str(DIGITS), "--format", fmt, "--quiet"])
    assert r.exit_code == 0, r.output
    if fmt == "json":
        data = json.loads(r.stdout)
        assert data["overall"]["count"] == 5000
        assert len(data["groups"]["class"]) == 10
    elif fmt == "markdown":
        assert r.stdout.startswith("# evalkit report") and "## By class" in r.stdout
    elif fmt == "table":
        assert "by class:" in r.stdout
    else:
        assert r.stdout == ""


def test_join_flags(tmp_path: Path):
    r = run("evaluate", SEP / "predictions.parquet", "--labels", SEP / "labels.parquet", "--on", "id",
            "--format", "json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metadata"]["rows_used"] == 2000


def test_config_file_and_flag_override(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"input: {SENTIMENT}\nby: [region]\neps: 1e-7\nout: {tmp_path / 'o'}\n")
    r = run("evaluate", "--config", cfg, "--eps", "1e-3", "-q", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["metadata"]["eps"] == 1e-3
    assert "region" in data["groups"]
    assert (tmp_path / "o" / "report.md").exists()


def test_env_var_sets_option(monkeypatch):
    monkeypatch.setenv("EVALKIT_EVALUATE_EPS", "0.01")
    r = CliRunner().invoke(main, ["evaluate", str(DIGITS), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metadata"]["eps"] == 0.01


def test_inspect_detects_layout():
    r = run("inspect", SENTIMENT)
    assert r.exit_code == 0
    assert "wide probabilities: prob_negative, prob_neutral, prob_positive" in r.output
    assert "region" in r.output and "rows:   5,000" in r.output
    r = run("inspect", DIGITS, "--format", "json")
    info = json.loads(r.output)
    assert info["layout"][0] == "predictions: list column of probabilities: probs"


def test_missing_input_is_a_clean_error():
    r = run("evaluate", "does/not/exist.parquet")
    assert r.exit_code == 3 and "error:" in r.output and "Traceback" not in r.output


def test_on_without_labels_is_a_usage_error(tmp_path: Path):
    for col in ("id", "no_such_column"):  # present (was silently ignored) or missing (was exit 1)
        r = CliRunner().invoke(main, ["evaluate", str(DIGITS), "--on", col, "--out", str(tmp_path / col)])
        assert r.exit_code == 2, r.output
        assert "--on KEY needs --labels FILE" in r.output and "internal error" not in r.output
        assert not (tmp_path / col).exists()


@pytest.mark.parametrize("command", ["evaluate", "inspect"])
def test_labels_given_twice_is_a_usage_error_not_a_dropped_file(tmp_path: Path, command: str):
    """rt-eval8 F5: ``--labels a --labels b`` read b only (click keeps the last), so half the
    rows went unmatched with an error naming b, or were dropped with --unmatched drop."""
    labels = sorted(SEP.glob("**/*label*.parquet"))[0]
    out = tmp_path / "r"
    r = CliRunner().invoke(main, [command, str(DIGITS), "--labels", str(labels), "--labels", str(DIGITS), "--on", "id",
                                  *(["--out", str(out)] if command == "evaluate" else [])])
    assert r.exit_code == 2, r.output
    assert f"--labels given 2 times ({labels}, {DIGITS}): it takes one labels input" in r.output
    assert "a directory of them or a quoted glob" in r.output and not out.exists()


def test_input_reached_twice_is_read_once(tmp_path: Path):
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["evaluate", str(DIGITS), str(DIGITS.parent / "." / DIGITS.name),
                                  "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "reached a file already read" in r.output
    one = json.loads((out / "summary.json").read_text())["metadata"]
    r = run("evaluate", DIGITS, "--out", tmp_path / "one", "--quiet")
    single = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert one["rows_read"] == single["metadata"]["rows_read"] and one["inputs_deduplicated"] == 1
    assert len(one["inputs"]) == 1
    r = run("inspect", DIGITS, DIGITS)
    assert r.exit_code == 0 and "reached a file already read" in r.output
    assert f"rows:   {single['metadata']['rows_read']:,}" in r.output


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux /proc")
def test_command_process_runs_without_transparent_huge_pages():
    """The ``evalkit`` process turns transparent huge pages off for itself (first touches of
    short-lived batch buffers zeroed whole 2 MiB pages); a process that only imports the
    library keeps the system's setting."""
    import os
    import subprocess
    import sys

    import evalkit

    def thp(code: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)}
        r = subprocess.run([sys.executable, "-c", code + "\nprint(open('/proc/self/status').read()"
                            ".split('THP_enabled:')[1].split()[0])"],
                           capture_output=True, text=True, timeout=60, env=env, check=True)
        return r.stdout.strip()

    assert thp("import evalkit.__main__ as m\nm.process_settings()") == "0"
    assert thp("import evalkit.api") == "1"


def test_command_process_imports_arrow_compute_without_parsing_options_docs():
    """The ``evalkit`` process imports ``pyarrow.compute`` without parsing its options
    classes' numpydoc text (their parameters are missing from the functions' docstrings
    there, nowhere else); the parser is put back, the functions work; an importer of the
    library gets pyarrow's full docstrings."""
    import os
    import subprocess
    import sys

    import evalkit

    def run(code: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env=env, check=True)
        return r.stdout.strip()

    check = ("import pyarrow.compute as pc, pyarrow.vendored.docscrape as d\n"
             "print('skip_nulls : bool' in pc.sum.__doc__, 'Parameters' in pc.sum.__doc__,"
             " d.NumpyDocString.__name__, pc.sum([1, 2]).as_py())")
    assert run("import evalkit.__main__ as m\nm.import_arrow_compute()\n" + check) == "False True NumpyDocString 3"
    assert run("import evalkit.api\n" + check) == "True True NumpyDocString 3"


@pytest.mark.parametrize("gate", [False, True])
def test_command_process_ends_with_everything_finished_but_no_teardown(tmp_path: Path, gate: bool):
    """The ``evalkit`` process ends by ``os._exit`` (evalkit.__main__.leave): the teardown of
    every module (0.15 s after a 6M-row run) is skipped, but first what the interpreter's
    exit finishes is finished: a running non-daemon thread is joined, atexit handlers run,
    stdout (a large JSON document into a pipe) is flushed whole; the exit code is the
    command's (5: a failed gate, raised by sys.exit inside the command)."""
    import os
    import subprocess
    import sys
    import textwrap

    import evalkit

    src = tmp_path / "p.parquet"
    pd.DataFrame({"prob_a": [0.7, 0.2, 0.6] * 400, "prob_b": [0.3, 0.8, 0.4] * 400,
                  "label": [0, 1, 1] * 400, "region": [f"r{i}" for i in range(1200)]}).to_parquet(src)
    cfg = tmp_path / "g.yaml"
    cfg.write_text("gates:\n  max_mean_loss: 0.01\n" if gate else "gates: {}\n")
    marks = tmp_path / "marks"
    script = textwrap.dedent(f"""
        import atexit, os, sys, threading, time
        fd = os.open({str(marks)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        def late():
            time.sleep(0.3)
            os.write(fd, b"thread joined\\n")
        threading.Thread(target=late).start()
        atexit.register(lambda: os.write(fd, b"atexit ran\\n"))
        class Torn:  # freed by the teardown of __main__, which the usual exit runs
            def __del__(self, write=os.write, fd=fd):
                write(fd, b"module torn down\\n")
        kept = Torn()
        sys.argv = ["evalkit", "evaluate", {str(src)!r}, "--by", "region", "--format", "json",
                    "--config", {str(cfg)!r}, "--no-plots", "-q"]
        from evalkit.__main__ import run
        run()
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == (5 if gate else 0), (r.returncode, r.stderr)
    doc = json.loads(r.stdout)  # all of it: flushed before the process ended
    assert len(doc["groups"]["region"]) == 1200
    assert marks.read_text().splitlines() == ["thread joined", "atexit ran"]


@pytest.mark.parametrize("plots", [False, True])
def test_command_imports_without_the_garbage_collector(tmp_path: Path, plots: bool):
    """In the ``evalkit`` process, ``evaluate`` imports pandas (and the rest of the library)
    with the cyclic garbage collector off (~180 collections before the first batch, freeing
    nothing), and runs with it on again, the imported objects frozen out of it; the plot
    helper is forked with it on."""
    import os
    import subprocess
    import sys
    import textwrap

    import evalkit

    src = tmp_path / "p.parquet"
    pd.DataFrame({"prob_a": [0.7, 0.2, 0.6], "prob_b": [0.3, 0.8, 0.4], "label": [0, 1, 1]}).to_parquet(src)
    script = textwrap.dedent(f"""
        import atexit, gc, importlib.abc, os, sys
        seen = {{}}
        class Spy(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name in ("pandas", "evalkit.engines.local") and name not in seen:
                    seen[name] = (gc.isenabled(), gc.get_freeze_count() > 0)
                return None
        sys.meta_path.insert(0, Spy())
        real_fork = os.fork
        def fork():
            seen.setdefault("fork", (gc.isenabled(), gc.get_freeze_count() > 0))
            return real_fork()
        os.fork = fork
        atexit.register(lambda: print(sorted(seen.items())))
        sys.argv = ["evalkit", "evaluate", {str(src)!r}, "--out", {str(tmp_path / "r")!r},
                    "--format", "none", "-q"] + ([] if {plots} else ["--no-plots"])
        from evalkit.__main__ import run
        run()
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    seen = dict(eval(r.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own script's output
    assert seen["pandas"] == (False, False)  # imported with the collector off
    assert seen["evalkit.engines.local"] == (True, True)  # the run: on, the imports frozen
    if plots and hasattr(os, "fork"):
        assert seen["fork"] == (True, True)


def _evalkit_process(args: list[str], tmp_path: Path, *, close: int | None = None,
                     stdout: object = None) -> tuple[int, str]:
    """Run ``python -m evalkit ARGS`` as its own process, fd ``close`` closed before it starts
    (``>&-`` / ``2>&-``), stdout to ``stdout`` (a path) if given; (exit code, stderr)."""
    import os
    import subprocess
    import sys

    import evalkit

    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)}
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as ef, open(stdout or os.devnull, "wb") as of:
        r = subprocess.run([sys.executable, "-m", "evalkit", *args], env=env, timeout=120,
                           stdout=of, stderr=ef, preexec_fn=(lambda: os.close(close)) if close else None)
    return r.returncode, err.read_text()


@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_closed_stdout_or_stderr_keeps_the_exit_code_and_the_report(tmp_path: Path, stream: str,
                                                                         gate: bool):
    """`evalkit ... >&-` (a job started without a stdout) or `2>&-`: the command's own exit
    code (0, or 5 for a failed gate), never an internal error, and a complete report
    (rt-eval7 F5: os._exit's final flush of a None stdout raised; F6: no stderr, exit 1)."""

    src = tmp_path / "p.parquet"
    pd.DataFrame({"prob_a": [0.7, 0.2, 0.6] * 50, "prob_b": [0.3, 0.8, 0.4] * 50,
                  "label": [0, 1, 1] * 50}).to_parquet(src)
    cfg = tmp_path / "g.yaml"
    cfg.write_text("gates:\n  max_mean_loss: 0.01\n" if gate else "gates:\n  max_mean_loss: 10\n")
    code, _ = _evalkit_process(["evaluate", str(src), "--out", str(tmp_path / "r"), "--config", str(cfg)],
                               tmp_path, close=1 if stream == "stdout" else 2)
    assert code == (5 if gate else 0)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["metadata"]["gates"]["passed"] is (not gate)
    for name in ("version", "inspect"):
        args = ["--version"] if name == "version" else ["inspect", str(src)]
        assert _evalkit_process(args, tmp_path, close=1 if stream == "stdout" else 2)[0] == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["--format", "json"], ["--format", "table", "--out", "OUT"], ["--help"],
                                  ["--version"]], ids=["json", "table", "help", "version"])
def test_output_that_cannot_be_written_is_an_output_error_naming_stdout(tmp_path: Path, args: list[str]):
    """stdout on a full disk (`> /dev/full`): exit 4 (output error) and one line saying
    standard output could not be written; before, 'internal error ... a bug in evalkit'
    (exit 1), a raw click traceback for --help, or exit 0 when the failure came only at the
    final flush (rt-eval7 F3). A report written before is complete."""
    src = tmp_path / "p.parquet"
    pd.DataFrame({"prob_a": [0.7, 0.2, 0.6] * 50, "prob_b": [0.3, 0.8, 0.4] * 50,
                  "label": [0, 1, 1] * 50}).to_parquet(src)
    args = [a.replace("OUT", str(tmp_path / "r")) for a in args]
    if args[0] == "--format":
        args = ["evaluate", str(src), "--no-plots", *args]
    elif args == ["--help"]:
        args = ["evaluate", "--help"]
    code, err = _evalkit_process(args, tmp_path, stdout="/dev/full")
    assert code == 4, err
    assert "error: could not write to standard output: No space left on device" in err
    assert "internal error" not in err and "Traceback" not in err
    if "--out" in args:
        assert json.loads((tmp_path / "r" / "summary.json").read_text())["overall"]["count"] == 150


@pytest.mark.parametrize("command", ["evaluate", "compare", "history"])
def test_a_reader_closing_the_pipe_early_keeps_the_gate_failure(tmp_path: Path, command: str):
    """`evalkit ... | head -1`: the reader closes the pipe after one line. The rest of stdout
    is dropped, but the command still prints its `gate failed:` lines on stderr and exits 5
    (rt-hist7 F4: it exited 0 without them, so a CI step piping the tables into `head`
    passed a failed night)."""
    import os
    import subprocess
    import sys

    import numpy as np

    import evalkit

    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 3000)
    src = tmp_path / "p.parquet"
    pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.integers(0, 2, 3000),
                  "user": [f"u{i % 700}" for i in range(3000)]}).to_parquet(src)
    cfg = tmp_path / "g.yaml"
    cfg.write_text("gates:\n  max_mean_loss: 0.01\n")
    for r in ("r1", "r2"):
        evalkit.evaluate(str(src), by=["user"], plots=False).write(tmp_path / r)
    args = {"evaluate": ["evaluate", str(src), "--by", "user", "--no-plots", "--out", str(tmp_path / "r3")],
            "compare": ["compare", str(tmp_path / "r1"), str(tmp_path / "r2")],
            "history": ["history", str(tmp_path / "r1"), str(tmp_path / "r2"), "--no-plots"]}[command]
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)}
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", *args, "--config", str(cfg)], env=env,
                            stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        reader.read(1)  # one byte, then the reader goes away, as `head -c 1` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err.decode()
    assert "gate failed: max_mean_loss overall" in err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize("args", [["evaluate", "x.parquet", "--bogus"], ["history", "r", "--lookback", "0"],
                                  ["evaluate", "x.parquet", "--eps", "0.9"]], ids=["click", "click-value", "evalkit"])
def test_a_usage_error_whose_stderr_reader_has_gone_still_exits_2(tmp_path: Path, args: list[str]) -> None:
    """rt-hist8 F3: `evalkit ... 2>&1 >/dev/null | true`: the usage message cannot be written
    (the pipe's reader has gone), which made click's usage errors exit 1, the code of a bug.
    The message is lost; the code stays 2, as for evalkit's own usage errors."""
    import os
    import subprocess
    import sys

    import evalkit

    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)}
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "evalkit", *args], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=write_end, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("command", ["evaluate", "compare", "history"])
def test_unwritable_stdout_still_prints_the_failed_gates(tmp_path: Path, command: str):
    """rt-hist8 F8: with stdout on a full disk the command stopped at its tables (exit 4) and
    its `gate failed:` lines never reached stderr. Now stdout's failure is said, the gate
    lines follow, and a failed gate exits 5 (the outcome a pipeline gates on)."""
    import evalkit

    src = tmp_path / "p.parquet"
    pd.DataFrame({"prob_a": [0.7, 0.2, 0.6] * 50, "prob_b": [0.3, 0.8, 0.4] * 50,
                  "label": [0, 1, 1] * 50}).to_parquet(src)
    for r in ("r1", "r2"):
        evalkit.evaluate(str(src), plots=False).write(tmp_path / r)
    cfg = tmp_path / "g.yaml"
    cfg.write_text("gates:\n  max_mean_loss: 0.01\n")
    args = {"evaluate": ["evaluate", str(src), "--no-plots", "--out", str(tmp_path / "r3")],
            "compare": ["compare", str(tmp_path / "r1"), str(tmp_path / "r2")],
            "history": ["history", str(tmp_path / "r1"), str(tmp_path / "r2"), "--no-plots"]}[command]
    code, err = _evalkit_process([*args, "--config", str(cfg)], tmp_path, stdout="/dev/full")
    assert code == 5, err
    assert "could not write to standard output" in err and "gate failed: max_mean_loss overall" in err
    assert "Traceback" not in err and "internal error" not in err


def test_json_on_stdout_is_the_written_reports_json(tmp_path: Path):
    """rt-final8 N1: `--format json` lacked `metadata.run_id` (evaluate: also
    `table_fingerprints`) that summary.json / compare.json carry, so a pipeline reading stdout
    could not join it to the manifest or history's runs.parquet. With --out, stdout is now the
    report's JSON byte for byte; without, the result's (no report, no run id)."""
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        r = run("evaluate", SENTIMENT, "--by", "region", "--out", out, "-q", "--no-plots", "--format", "json")
        assert r.exit_code == 0, r.output
        assert r.stdout == (out / "summary.json").read_text(encoding="utf-8")
        data = json.loads(r.stdout)
        assert data["metadata"]["run_id"] and "by_region.parquet" in data["table_fingerprints"]
        outs.append(out)
    r = run("compare", *outs, "--out", tmp_path / "c", "-q", "--format", "json")
    assert r.exit_code == 0, r.output
    assert r.stdout == (tmp_path / "c" / "compare.json").read_text(encoding="utf-8")
    assert json.loads(r.stdout)["metadata"]["run_id"]
    r = run("evaluate", SENTIMENT, "-q", "--format", "json")
    assert r.exit_code == 0 and "run_id" not in json.loads(r.stdout)["metadata"]


@pytest.mark.parametrize("plots", [True, False])
def test_a_broken_matplotlib_is_named_on_stderr_and_in_the_report(tmp_path: Path, plots: bool):
    """rt-final8 F12: a matplotlib that is installed but fails to import (a shim raising
    RuntimeError): every plot was dropped silently, report.md said "matplotlib is not
    installed", nothing on stderr. Now one `warning:` line naming the failure, the same in
    report.md and summary.json (metadata.plots_off); nothing said with --no-plots."""
    import subprocess
    import sys

    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise RuntimeError("broken font cache (shim)")\n')
    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "-m", "evalkit", "evaluate", str(SENTIMENT), "--out", str(out), "-q",
                        "--format", "none", *([] if plots else ["--no-plots"])],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path / 'shim'}{os.pathsep}{ROOT}"})
    assert r.returncode == 0, r.stderr
    why = "matplotlib failed to import (RuntimeError: broken font cache (shim))"
    meta = json.loads((out / "summary.json").read_text())["metadata"]
    if not plots:
        assert r.stderr == "" and "plots_off" not in meta
        return
    assert r.stderr == f"warning: no plots were drawn: {why}; repair or reinstall it, or use --no-plots\n"
    assert meta["plots_off"] == why
    md = (out / "report.md").read_text()
    assert f"Plots are off: {why}." in md and "not installed" not in md
    assert list(out.glob("*.png")) == []


def test_a_broken_matplotlib_is_named_by_history_as_by_evaluate(tmp_path: Path):
    """history drew no plot and said nothing when matplotlib failed to import; now the one
    warning evaluate gives (plots.note_no_plots): on stderr and as a note of history.md."""
    import subprocess
    import sys

    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise RuntimeError("broken font cache (shim)")\n')
    for i in (1, 2):
        assert CliRunner().invoke(main, ["evaluate", str(SENTIMENT), "--out", str(tmp_path / f"r{i}"), "-q",
                                         "--no-plots", "--format", "none"]).exit_code == 0
    out = tmp_path / "h"
    r = subprocess.run([sys.executable, "-m", "evalkit", "history", str(tmp_path / "r1"), str(tmp_path / "r2"),
                        "--out", str(out), "--format", "none"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path / 'shim'}{os.pathsep}{ROOT}"})
    assert r.returncode == 0, r.stderr
    why = "matplotlib failed to import (RuntimeError: broken font cache (shim))"
    assert f"warning: no plots were drawn: {why}; repair or reinstall it, or use --no-plots\n" in r.stderr
    assert f"no plots were drawn: {why}" in (out / "history.md").read_text()
    assert list(out.glob("*.png")) == []
