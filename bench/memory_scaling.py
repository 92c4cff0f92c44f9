"""Peak RSS of evalkit (and optionally baselines) against the number of rows.

Example::

    .venv/bin/python bench/memory_scaling.py --data-dir bench/_data
    .venv/bin/python bench/memory_scaling.py --rows 1000000,10000000,100000000

Generates ``wide10`` at each size (chunked, so generation memory is flat too),
runs each implementation once per size in its own measured subprocess and prints
wall time and peak RSS against N.  A streaming implementation shows a flat peak
RSS; one that materialises the table grows linearly (bytes/row stays constant).
A failing implementation is reported with its stderr tail and the run carries on.
Inputs are warm in the page cache (dropping it needs root).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import _datagen
import _harness
from run_bench import ALL_IMPLS, default_evalkit_cmd, impl_command

DEFAULT_ROWS = "1000000,4000000,16000000"


def _rows_list(value: str) -> list[int]:
    rows = [int(float(v)) for v in value.split(",") if v.strip()]
    if not rows or any(r < 1 for r in rows):
        raise argparse.ArgumentTypeError("need a comma list of positive row counts")
    return sorted(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rows",
        type=_rows_list,
        default=_rows_list(DEFAULT_ROWS),
        help=f"comma list of row counts, e.g. up to 100000000 (default {DEFAULT_ROWS})",
    )
    p.add_argument(
        "--impls",
        default="evalkit",
        help=f"comma list of {','.join(ALL_IMPLS)} (default: evalkit)",
    )
    p.add_argument("--data-dir", type=Path, default=None, help="reuse datasets here")
    p.add_argument("--out-dir", type=Path, default=None, help="outputs here (default: temp)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evalkit-cmd", default=default_evalkit_cmd())
    p.add_argument("--evalkit-args", default="", help="extra flags for 'evalkit evaluate'")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    args = p.parse_args(argv)
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = [i for i in args.impls if i not in ALL_IMPLS]
    if unknown:
        p.error(f"unknown implementation(s): {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the scaling sweep; returns 1 if any run failed."""
    args = parse_args(argv)
    _harness.compile_bytecode(shlex.split(args.evalkit_cmd))
    tmp_root = Path(tempfile.mkdtemp(prefix="evalkit-memscale-"))
    data_dir = args.data_dir or tmp_root / "data"
    out_root = args.out_dir or tmp_root / "out"
    extra = shlex.split(args.evalkit_args)
    results: list[dict[str, object]] = []
    try:
        for rows in args.rows:
            data, generated = _datagen.ensure(data_dir, "wide10", rows, args.seed)
            print(f"wide10 {rows:,} rows: {data} ({'generated' if generated else 'reused'})")
            for impl in args.impls:
                out = out_root / f"{rows}" / impl
                shutil.rmtree(out, ignore_errors=True)
                if impl != "evalkit":
                    out.mkdir(parents=True)
                cmd = impl_command(impl, data, out, args.evalkit_cmd, extra)
                res = _harness.run_measured(cmd, timeout_s=args.timeout)
                entry = {"rows": rows, "impl": impl, **res.to_dict()}
                if res.ok:
                    try:
                        written = _harness.read_rows_count(out)
                        entry["rows_written"] = written
                        if written != rows:
                            entry["error"] = f"rows.parquet has {written} rows"
                    except Exception as exc:  # noqa: BLE001 - report and carry on
                        entry["error"] = f"bad output: {type(exc).__name__}: {exc}"
                else:
                    status = "TIMEOUT" if res.timed_out else f"rc={res.returncode}"
                    entry["error"] = f"{status}: {res.stderr_tail.strip()[-1500:]}"
                results.append(entry)
                state = "ok" if "error" not in entry else "FAILED"
                print(
                    f"  {impl:<11} {res.wall_s:8.2f} s  "
                    f"{_harness.fmt_bytes(res.peak_rss_bytes):>10}  {state}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    print("\nPeak RSS vs N (wide10, inputs warm in page cache)")
    header = f"{'impl':<11} {'rows':>13} {'wall s':>8} {'peak RSS':>11} {'bytes/row':>10}"
    print(header)
    print("-" * len(header))
    for e in results:
        if "error" in e:
            print(f"{e['impl']:<11} {e['rows']:>13,} {'FAILED':>8}")
            continue
        per_row = e["peak_rss_bytes"] / e["rows"]
        print(
            f"{e['impl']:<11} {e['rows']:>13,} {e['wall_s']:>8.2f} "
            f"{_harness.fmt_bytes(e['peak_rss_bytes']):>11} {per_row:>10.1f}"
        )
    for e in results:
        if "error" in e:
            print(f"\n{e['impl']} at {e['rows']:,} rows FAILED: {e['error']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
        args.json.write_text(json.dumps(_harness.json_safe(payload), indent=2, default=str))
    return 1 if any("error" in e for e in results) else 0


if __name__ == "__main__":
    sys.exit(main())
