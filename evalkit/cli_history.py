"""``evalkit history``: how every group's loss moved over many runs, and when it changed.

Registered on the ``evalkit`` group by :mod:`evalkit.cli`.
"""

from __future__ import annotations

from typing import Any

import click

from .cli_common import (
    CONTEXT,
    EXIT_CODES_HELP,
    _err,
    echo_machine_formats,
    gate_count_options,
    gates_from_flags,
    handle_errors,
    print_options,
    printing,
    quiet_warnings,
    report_command_options,
    report_gates,
)


@click.command("history", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("reports", nargs=-1, required=True, metavar="REPORT_DIR...")
@report_command_options(
    "Output directory for history.md, history.json, the tables and plots. With --overwrite, a "
    "history already there is updated: rows of unchanged reports are reused, new ones read.",
    "YAML/TOML config file: its 'history' settings and 'gates'; flags override it.")
@click.option("--window", type=click.IntRange(min=2),
              help="Runs examined for changes and min / max (default 30).")
@click.option("--lookback", type=click.IntRange(min=1),
              help="'Change since N runs ago' and the drift gates compare with this run (default 7, "
                   "at most --window - 1).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="False discovery rate of flagged changes per grouping (default 0.05).")
@click.option("--min-change-pct", type=click.FloatRange(min=0),
              help="Flag only shifts of at least this many percent (default 0).")
@click.option("--max-rows", type=click.IntRange(min=1),
              help="Groups shown per grouping in history.md (default 20; all are in the tables).")
@click.option("--skip-bad", is_flag=True,
              help="Leave out report directories that are corrupt, edited since evalkit wrote them, "
                   "or not evalkit reports, instead of failing with exit code 3. A grouped table found "
                   "damaged only when read (content edited, impossible values) leaves out that "
                   "grouping of that run; the rest of the report is used. Each is listed in the "
                   "report (history.md, history.json); stderr names the first 5 of each kind and "
                   "counts the rest.")
@click.option("--reuse/--no-reuse", default=None,
              help="Reuse the rows of the history already in --out for reports that did not change "
                   "(default: reuse). Unchanged means same size, modification time and manifest "
                   "fingerprint: a report edited in place keeping all three is not read again, so "
                   "after editing reports by hand run once with --no-reuse (for reports only "
                   "evaluate wrote, the result is the same either way).")
@click.option("--max-drift", type=str, metavar="X|X%",
              help="Fail when a group's mean loss rose by more than X (absolute) or X% over "
                   "--lookback runs.")
@click.option("--max-drift-pct", type=float, metavar="PCT",
              help="Fail when a group's mean loss rose by more than PCT percent over --lookback runs.")
@click.option("--max-change-pct", type=float, metavar="PCT",
              help="Fail when a detected shift up exceeds PCT percent (0: any detected rise).")
@gate_count_options
@click.option("--fail-unchecked/--no-fail-unchecked", default=None,
              help="A gate that cannot be checked (too few runs, grouping absent from the latest run) "
                   "fails (default: it is reported as not checked).")
@click.option("--plots/--no-plots", default=True, help="Line plots per grouping (needs evalkit[plot]).")
@print_options
@handle_errors
def history(reports: tuple[str, ...], out: str | None, overwrite: bool, config_file: str | None,
            skip_bad: bool, plots: bool, fmt: str, quiet: bool, debug: bool, **flags: Any) -> None:
    """Trend of every group's mean loss over many evaluate reports, and when it changed.

    \b
    REPORT_DIR... are report directories written by `evalkit evaluate`, or globs of them
    ('reports/runs/*/'); runs are ordered by their recorded start time, not by name.
    Each report is checked against its evalkit-manifest.json (an edited report is exit 3);
    a copied report directory (same run id) counts once.
    Writes one tidy table per grouping (a directory, one Parquet file per month: run id,
    created, keys, count, mean, CI, clipped, accuracy), trends.parquet, history.md (overall line, per grouping: latest value,
    change since the previous run and since --lookback runs, min / max, and the night a
    shift started) and a plot per grouping. Runs whose eps, class set or weight differ start a
    new segment: nothing is compared across it.

    \b
    On a failed gate the full report is written first, then each failure is printed to
    stderr as `gate failed: <gate> <grouping>[<group>]: observed X > limit Y (...)` and
    the exit code is 5. A gate that cannot be checked is printed as `gate not checked:`.

    \b
    Examples:
      evalkit history 'reports/runs/*/' --out reports/history --overwrite
      evalkit history 'reports/runs/*/' --config configs/nightly.yaml --out reports/history
      evalkit history reports/runs/2026-11-* --window 60 --lookback 14 --max-drift 5%
      evalkit history 'reports/runs/*/' --skip-bad --format json | jq .changes
    """
    from .config import EvalConfig
    from .trend import history as run_history

    cfg = EvalConfig.from_file(config_file) if config_file else EvalConfig()
    gates = gates_from_flags(cfg.gates, config_file, flags,
                             ("max_drift", "max_drift_pct", "max_change_pct", "min_count",
                              "require_ci_excludes_zero", "fail_unchecked"), limits=("max_drift",))
    progress = None if quiet else _err
    cfg.gates = gates  # the file's gates with the flags over them, shared by the three commands
    with quiet_warnings(quiet):
        result = run_history(list(reports), out=out, overwrite=overwrite, config=cfg,
                             skip_bad=skip_bad, plots=plots, progress=progress, **flags)
    with printing():
        _print(result, fmt)
    if not quiet:
        _err(f"{len(result.changes)} change(s) flagged over {len(result.trends)} groupings"
             + (f"; {len(result.skipped)} report(s) or table(s) skipped" if result.skipped else ""))
        _err(f"report written to {out}/history.md" if out else "no --out given: nothing written")
    report_gates(result.failures, result.gates, quiet, result.unchecked)


def _print(result: Any, fmt: str) -> None:
    if echo_machine_formats(result, fmt):
        return
    meta = result.metadata
    click.echo(f"{meta['runs']} runs, {meta['first'][:10]} to {meta['last'][:10]}; "
               f"{meta['segments']} segment(s); {len(result.skipped)} skipped")
    overall = result.trends.get("overall")
    if overall is not None and len(overall):
        from .trend import _pct

        o = overall.iloc[0]
        click.echo(f"overall: latest {o['latest']:.4g}, change since previous run "
                   f"{_pct(o['change_prev_pct']) or 'n/a'}, since {meta['settings']['lookback']} "
                   f"runs ago {_pct(o['drift_pct']) or 'n/a'}, window min {o['min']:.4g} max {o['max']:.4g}")
    if result.changes.empty:
        click.echo("no changes flagged")
    from .escape import terminal

    for msg in result.changes["message"].head(50):
        click.echo(f"  {terminal(msg)}")
    if len(result.changes) > 50:
        click.echo(f"  ... and {len(result.changes) - 50} more")
