"""The ``evalkit`` command: a thin click layer over the library.

Every command parses flags into an :class:`~evalkit.config.EvalConfig`, calls one public
function, prints, and maps :class:`~evalkit.errors.EvalkitError` to its exit code. No
traceback reaches the user unless ``--debug`` is given. Heavy imports happen inside the
commands so ``evalkit --help`` is instant.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ._version import __version__
from .cli_common import (
    CONTEXT,
    EXIT_CODES_HELP,
    GROUP_CONTEXT,
    INSPECT_EXIT_CODES_HELP,
    _err,
    config_from_flags,
    echo_machine_formats,
    handle_errors,
    imports_without_gc,
    layout_options,
    printing,
    quiet_warnings,
    record_written,
    report_gates,
)


def _one_labels_input(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str | None:
    """``--labels`` names one labels input. Given twice, click kept the last and the first
    was silently dropped (rt-eval8 F5), while ``--on``, ``--by`` and INPUT take several:
    a usage error (exit 2) saying how several files are one labels input."""
    if len(value) > 1:
        raise click.UsageError(
            f"--labels given {len(value)} times ({', '.join(value)}): it takes one labels input. Several "
            "labels files are one input as a directory of them or a quoted glob (--labels 'labels/*.parquet').",
            ctx)
    return value[0] if value else None


@click.group(context_settings=GROUP_CONTEXT, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="evalkit")
def main() -> None:
    """Evaluate classification models from their saved predictions.

    \b
    Examples:
      evalkit inspect preds.parquet
      evalkit evaluate preds.parquet --out report/
      evalkit evaluate data/ --by region --by split,region --out report/
      evalkit evaluate preds.parquet --labels labels.parquet --on id --out report/
      evalkit evaluate --config configs/nightly.yaml
      evalkit compare baseline_report/ candidate_report/ --out cmp/
      evalkit history 'reports/runs/*/' --out reports/history

    Every option can also be set with an EVALKIT_<COMMAND>_<OPTION> environment variable,
    e.g. EVALKIT_EVALUATE_EPS=1e-6.
    """


@main.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("--config", "-c", "config_file", type=click.Path(dir_okay=False),
              help="YAML/TOML config file; flags override its keys.")
@click.option("--out", "-o", type=click.Path(), help="Output directory for the report.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing report in --out.")
@click.option("--labels", multiple=True, callback=_one_labels_input,
              help="Separate labels input (Parquet file, directory or glob), joined on --on.")
@click.option("--on", multiple=True, help="Join key column(s) for --labels. Repeatable.")
@layout_options
@click.option("--by", multiple=True,
              help="Group by column(s): --by region, or a combination --by split,region. Repeatable.")
@click.option("--by-class/--no-by-class", default=None, help="Group by true class (default on).")
@click.option("--by-split/--no-by-split", default=None,
              help="Group by a 'split' column when present (default on).")
@click.option("--eps", type=float, help="Clip probabilities to [eps, 1-eps] (default 1e-7).")
@click.option("--sum-tol", type=float, help="Tolerance of probability row sums (default 1e-3).")
@click.option("--renormalize", is_flag=True, default=None,
              help="Divide probability rows by their sum instead of failing on rows off 1.")
@click.option("--on-invalid", type=click.Choice(["error", "skip"]),
              help="error (default): fail on the first invalid row; skip: drop and count them.")
@click.option("--unmatched", type=click.Choice(["error", "drop"]),
              help="Keys without a match in the join: error (default) or drop and count them.")
@click.option("--quantiles", type=click.Choice(["auto", "exact", "sketch"]),
              help="Quantile method (auto: exact up to --exact-limit rows, then a 1e-3 sketch).")
@click.option("--exact-limit", type=int, help="Rows up to which auto quantiles are exact (default 1,000,000).")
@click.option("--top-k", type=int, help="Hardest examples kept overall and per class (default 10).")
@click.option("--confidence", type=float,
              help="Confidence level of the intervals (sem, ci_low, ci_high) in every table (default 0.95).")
@click.option("--ci", type=click.Choice(["t", "bootstrap"]),
              help="Intervals: t (default, from the moments) or bootstrap (streaming Poisson "
                   "bootstrap, seeded by row position; costs about --bootstrap-samples draws per row).")
@click.option("--bootstrap-samples", type=int, help="Bootstrap replicates with --ci bootstrap (default 100).")
@click.option("--bootstrap-seed", type=int, help="Seed of the bootstrap weights (default 0).")
@click.option("--calibration-bins", type=int,
              help="Equal-width confidence bins of ECE / MCE / reliability diagrams (default 15).")
@click.option("--slices",
              help="Comma-separated columns: test every value and combination for a significantly "
                   "worse mean loss (skewness-corrected Welch + Benjamini-Hochberg; weighted with --weight), e.g. --slices region,device.")
@click.option("--slice-depth", type=click.IntRange(1, 3),
              help="Largest combination of slice columns tested (1-3, default 2: values and pairs).")
@click.option("--slice-min-count", type=int, help="Slices (and complements) smaller than this are not tested (default 30).")
@click.option("--slice-fdr", type=float, help="False discovery rate of the slice search (default 0.05).")
@click.option("--slice-limit", type=int,
              help="Most distinct slices per column combination; bigger ones are skipped with a note (default 10000).")
@click.option("--rows/--no-rows", "write_rows", default=None, help="Write per-row output (default on).")
@click.option("--plots/--no-plots", default=None,
              help="Write PNG plots next to report.md (default on; needs evalkit[plot]).")
@click.option("--batch-size", type=int,
              help="Rows per batch (default: chosen from the class count). At most 32 MiB of "
                   "prediction values (rows x classes x bytes per value) a batch, so memory stays "
                   "bounded: a bigger size is cut, saying so on stderr (not with --quiet).")
@click.option("--engine", type=click.Choice(["local", "dask"]), help="Execution engine (default local).")
@click.option("--scheduler", help="Dask scheduler address (with --engine dask).")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json", "none"]), default="table",
              show_default=True, help="What to print to stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@handle_errors
def evaluate(inputs: tuple[str, ...], config_file: str | None, fmt: str, quiet: bool, debug: bool,
             **flags: Any) -> None:
    """Evaluate predictions: loss per row, stats overall / by class / by split / by slices.

    \b
    INPUT is a Parquet file, a directory (hive partitions like split=val/ become
    columns), a glob, or several of those. The layout is detected from column names
    (run `evalkit inspect INPUT` to see what is detected); flags override it.

    \b
    Examples:
      evalkit evaluate preds.parquet --out report/
      evalkit evaluate 'preds/*.parquet' --prefix prob_ --label y --by region --out report/
      evalkit evaluate preds.parquet --predictions logits --logits --out report/
      evalkit evaluate preds.parquet --labels labels.parquet --on id --out report/
      evalkit evaluate --config configs/nightly.yaml --overwrite
      evalkit evaluate preds.parquet --format json | jq .overall.mean
    """
    if inputs:
        flags["input"] = list(inputs)
    with imports_without_gc():
        cfg = config_from_flags(config_file, flags)
        if not cfg.input:
            raise click.UsageError("give an INPUT or a config file with an 'input' key")
        early = bool(cfg.out and cfg.plots)
        if early:
            import pandas  # noqa: F401
    try:
        if early:
            # The plot helper, forked once pandas (which it shares) is in: it imports
            # matplotlib while this process imports the rest and sets the run up.
            from .plot_process import start_early

            start_early()
        _evaluate_command(cfg, fmt, quiet, debug)
    finally:
        if early:  # a helper no run took (interrupted, failed early) ends with the command
            from .plot_process import discard_early

            discard_early()


def _evaluate_command(cfg: Any, fmt: str, quiet: bool, debug: bool) -> None:
    """The rest of ``evaluate``: run, write, print, exit code of the gates."""
    with imports_without_gc():
        from .api import evaluate as _evaluate
        from .api import run
        from .progress import make_progress

    progress = make_progress(quiet=quiet)
    if cfg.engine == "dask" and not debug and os.environ.get("EVALKIT_DEBUG") != "1":
        import logging

        # The CLI owns the process: distributed's log lines (tracebacks of a lost scheduler,
        # reconnect warnings) never reach the user without --debug; errors are one line.
        logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)
    try:
        with quiet_warnings(quiet):  # -q: no library warnings (evalkit's own still show), as compare, history
            if cfg.out:
                result, path = run(cfg, progress=progress)
            else:
                cfg.write_rows = False
                inputs_arg: Any = cfg.input[0] if len(cfg.input) == 1 else cfg.input
                result, path = _evaluate(inputs_arg, config=cfg, progress=progress), None
    finally:
        progress.close()
    if path is not None:
        record_written(path, result)
    with printing():
        _print_result(result, fmt, written=path is not None)
    if not quiet:
        if path is not None:
            _err(f"report written to {path}/report.md")
        else:
            _err("no --out given: nothing written")
    # the gates' stderr lines of compare and history (escaped, not-checked even with -q, exit 5)
    report_gates(result.gate_failures, (result.metadata.get("gates") or {}).get("checked"), quiet,
                 result.gate_not_checked)


def _print_result(result: Any, fmt: str, written: bool = False) -> None:
    from .display import MAX_TERMINAL_GROUPS, bounded_groups, left_out_note
    from .escape import terminal
    from .report import STAT_COLUMNS, overall_line, text_table

    if echo_machine_formats(result, fmt):
        return
    click.echo(f"overall: {overall_line(result)}")
    click.echo()
    stats = [c for c in STAT_COLUMNS + ["weighted_mean"] if c in result.overall.index]
    for g in result.groupings:
        if not g.columns:
            continue
        df = result.groups[g.name]
        click.echo(f"by {terminal(g.name)}:")
        shown, n_left = bounded_groups(df, MAX_TERMINAL_GROUPS)
        click.echo(text_table(shown, list(g.columns) + [c for c in stats if c in df.columns], keys=g.columns))
        if n_left:
            click.echo(left_out_note(n_left, len(shown), g.file_stem + ".parquet" if written else None))
            click.echo()
    if result.slices is not None:
        from .report import slice_terminal_lines

        click.echo("\n".join(slice_terminal_lines(result)))


@main.command(context_settings=CONTEXT, epilog=INSPECT_EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--labels", multiple=True, callback=_one_labels_input,
              help="Separate labels input, to see how it would be joined.")
@click.option("--on", multiple=True, help="Join key column(s) for --labels (default: the one shared key).")
@layout_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@handle_errors
def inspect(inputs: tuple[str, ...], labels: str | None, fmt: str, debug: bool, **flags: Any) -> None:
    """Show schema, row count and the layout evalkit detects.

    \b
    Examples:
      evalkit inspect preds.parquet
      evalkit inspect 'runs/2026-11-*/preds.parquet' --format json
    """
    with imports_without_gc():
        from .inspect import inspect_input, render_inspect
        from .report import to_json_default

        cfg = config_from_flags(None, flags)
    info = inspect_input(list(inputs) if len(inputs) > 1 else inputs[0], labels=labels, config=cfg,
                         cli=True)
    if fmt == "json":
        click.echo(json.dumps(info, indent=2, default=to_json_default))
    else:
        click.echo(render_inspect(info), nl=False)




def _register_optional_commands() -> None:
    """Commands defined in their own modules (kept out of this file's way)."""
    try:
        from .cli_compare import compare as compare_command
    except ImportError:  # pragma: no cover - module not present in this build
        return
    main.add_command(compare_command, "compare")
    from .cli_history import history as history_command

    main.add_command(history_command, "history")


_register_optional_commands()
