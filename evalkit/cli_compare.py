"""``evalkit compare``: compare a candidate run against a baseline, check gates.

Registered on the ``evalkit`` group by :mod:`evalkit.cli`; shares its settings and error
handling with it through :mod:`evalkit.cli_common` (it never imports :mod:`evalkit.cli`).
"""

from __future__ import annotations

from typing import Any

import click

from .cli_common import (
    CONTEXT,
    EXIT_CODES_HELP,
    LAYOUT_KEYS,
    _err,
    config_from_flags,
    echo_machine_formats,
    gate_count_options,
    gates_from_flags,
    handle_errors,
    layout_options,
    print_options,
    printing,
    quiet_warnings,
    record_written,
    report_command_options,
    report_gates,
)


@click.command("compare", context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.argument("baseline", metavar="BASELINE")
@click.argument("candidate", metavar="CANDIDATE")
@layout_options
@report_command_options(
    "Output directory for compare.md, compare.json and the Parquet tables.",
    "YAML/TOML config file: its 'gates' are checked and its settings evaluate prediction inputs; "
    "flags override it.")
@click.option("--max-regression", type=str, metavar="X|X%",
              help="Fail when a group's mean loss rises by more than X (absolute), or X% "
                   "(relative, e.g. 5%). Applies to every grouping.")
@click.option("--max-regression-pct", type=float, metavar="PCT",
              help="Fail when a group's mean loss rises by more than PCT percent.")
@gate_count_options
@click.option("--max-mean-loss", type=float, help="Fail when the candidate's overall mean loss exceeds this.")
@click.option("--max-clipped-fraction", type=float,
              help="Fail when the candidate's overall share of clipped rows exceeds this.")
@click.option("--seed", type=click.IntRange(min=0), help="Bootstrap seed (default 0).")
@click.option("--n-boot", type=click.IntRange(min=100), help="Bootstrap resamples (default 1000).")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Confidence level of the delta intervals (default 0.95).")
@click.option("--pair-on", multiple=True,
              help="Key column(s) to pair rows on (default: the keys both runs recorded, e.g. id). "
                   "Repeatable.")
@click.option("--unpaired", is_flag=True, help="Never pair rows (unpaired bootstrap everywhere).")
@click.option("--allow-mismatch", is_flag=True, default=None,
              help="Compare runs whose eps or class set differ (refused by default).")
@print_options
@handle_errors
def compare(baseline: str, candidate: str, out: str | None, overwrite: bool,
            config_file: str | None, fmt: str, quiet: bool, debug: bool, pair_on: tuple[str, ...],
            unpaired: bool, **flags: Any) -> None:
    """Compare a CANDIDATE run against a BASELINE, group by group, and check gates.

    \b
    BASELINE and CANDIDATE are report directories written by `evalkit evaluate`, or two
    prediction inputs, evaluated on the fly with the same settings (--config).
    For every grouping (overall, class, split, --by slices) each group gets both mean losses,
    delta = candidate - baseline (positive = worse), the relative delta, both counts and a
    confidence interval of the delta: paired per-row differences when both runs hold the
    same row keys (e.g. id); when some keys are in one run only, the rows in both paired and
    the others counted ('partly paired'); otherwise an unpaired bootstrap (deterministic, --seed).
    Groups in one run only are listed. Runs with different eps or classes are refused
    unless --allow-mismatch.

    \b
    On a failed gate the full report is written first, then each failure is printed to
    stderr as `gate failed: <gate> <grouping>[<group>]: observed X > limit Y (...)` and
    the exit code is 5.

    \b
    Examples:
      evalkit compare reports/baseline reports/candidate --out reports/cmp
      evalkit compare base_preds.parquet cand_preds.parquet --config eval.yaml --out cmp/
      evalkit compare base.parquet cand.parquet -p probs --label y --classes a,b,c
      evalkit compare reports/baseline reports/nightly --config configs/nightly.yaml --out cmp/
      evalkit compare base/ cand/ --max-regression 0.02 --require-ci-excludes-zero --min-count 200
      evalkit compare base/ cand/ --max-regression 5% --format json | jq .gates
    """
    from .comparison import compare as run_compare
    from .config import check_compare_settings

    if out:
        from .outdir import check_out_apart

        check_out_apart(out, [("baseline", baseline), ("candidate", candidate),
                              ("config file", config_file)])
    # Layout flags apply when BASELINE / CANDIDATE are prediction inputs, as in evaluate.
    cfg = config_from_flags(config_file, {k: flags.pop(k) for k in LAYOUT_KEYS})
    gates = gates_from_flags(cfg.gates, config_file, flags,
                             ("max_regression", "max_regression_pct", "require_ci_excludes_zero",
                              "min_count", "max_mean_loss", "max_clipped_fraction"),
                             limits=("max_regression",))

    settings: dict[str, Any] = check_compare_settings(getattr(cfg, "compare", None) or {},
                                                      config_file or "compare")
    for key in ("seed", "n_boot", "confidence", "allow_mismatch"):
        if flags.get(key) is not None:
            settings[key] = flags[key]
    if unpaired:
        settings["pair_on"] = []
    elif pair_on:
        settings["pair_on"] = list(pair_on)

    with quiet_warnings(quiet):
        cfg.gates = gates  # the file's gates with the flags over them, shared by the three commands
        result = run_compare(baseline, candidate, config=cfg, **settings)
        path = result.write(out, overwrite=overwrite) if out else None
    if path is not None:
        record_written(path, result)
    with printing():
        _print(result, fmt)
    if not quiet:
        counts = result.counts()
        _err(f"compared {len(result.tables)} groupings: {counts['regression']} regression(s), "
             f"{counts['improvement']} improvement(s), "
             f"{counts['only_in_baseline'] + counts['only_in_candidate']} group(s) in one run only")
        _err(f"report written to {path}/compare.md" if path is not None else "no --out given: nothing written")
    report_gates(result.failures, result.gates, quiet, result.unchecked)


def _print(result: Any, fmt: str) -> None:
    from .compare_report import _sorted_for_reading
    from .escape import terminal
    from .report import text_table
    from .reports import _grouping_columns

    if echo_machine_formats(result, fmt):
        return
    for name, df in result.tables.items():
        cols = list(_grouping_columns(name))
        click.echo(f"{'overall' if name == 'overall' else 'by ' + terminal(name)}:")
        click.echo(text_table(_sorted_for_reading(df), cols + [
            "status", "baseline_count", "candidate_count", "baseline_mean", "candidate_mean",
            "delta", "rel_delta", "ci_low", "ci_high", "method"], keys=cols))
