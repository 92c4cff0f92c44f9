"""Run one command and measure its wall time and peak RSS (stdlib only).

Usage: ``python bench/_measure.py STDOUT_FILE STDERR_FILE TIMEOUT_S -- CMD ...``

Prints one JSON object: ``returncode``, ``wall_s``, ``maxrss_bytes``,
``tree_rss_sampled_bytes``, ``timed_out``.

Why a separate, tiny process: on Linux a child's ``ru_maxrss`` starts from the
RSS of the process it was forked from (the pre-exec memory image counts towards
the high-water mark), so measuring from the benchmark driver, which has imported
pyarrow and generated data, would report the *driver's* size as a floor.  This
wrapper imports only the standard library (~10 MiB), so the floor is negligible.

Peak RSS is measured two ways:

* ``maxrss_bytes``: ``ru_maxrss`` from :func:`os.wait4` on the child, exact for a
  single process; it also covers descendants the child waited for, but as the
  *largest single* process, not a sum.
* ``tree_rss_sampled_bytes``: the largest summed RSS of the child's process tree
  seen while sampling ``/proc`` every ``SAMPLE_INTERVAL_S`` seconds, which catches
  implementations that run several processes at once (worker pools).

The child runs in its own session; on timeout its whole process group is killed,
and any process left in the group after it exits is killed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

SAMPLE_INTERVAL_S = 0.05
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads), via /proc/PID/task/*/children."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
        except (OSError, ValueError):
            continue
    return out


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss_bytes(root: int) -> int:
    """Summed RSS of ``root`` and all its descendants (0 if it is gone)."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_bytes(pid)
        stack.extend(_children(pid))
    return total


def _autogroup_nice() -> int | None:
    """This process's scheduler-group niceness (Linux autogroups), or None."""
    try:
        with open("/proc/self/autogroup") as fh:
            return int(fh.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _keep_priority(nice: int | None):  # type: ignore[no-untyped-def]
    """A ``preexec_fn`` giving the run's new session (its own scheduler group) the driver's
    group niceness: on a machine shared with other jobs, a driver started at high priority
    (``echo -19 > /proc/self/autogroup``) then measures its runs at that priority too."""
    if nice is None:
        return None

    def set_nice() -> None:
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as fh:
            fh.write(str(nice))

    return set_nice


def measure(cmd: list[str], stdout_path: str, stderr_path: str, timeout_s: float) -> dict:
    """Run ``cmd`` to completion (or timeout) and return the measurements."""
    priority = _keep_priority(_autogroup_nice())
    with open(stdout_path, "wb") as out_f, open(stderr_path, "wb") as err_f:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=out_f,
                stderr=err_f,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=priority,
            )
        except OSError as exc:
            err_f.write(f"could not start {cmd[0]!r}: {exc}\n".encode())
            return {
                "returncode": None,
                "wall_s": 0.0,
                "maxrss_bytes": 0,
                "tree_rss_sampled_bytes": 0,
                "timed_out": False,
            }
        sampled, timed_out = 0, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            sampled = max(sampled, tree_rss_bytes(proc.pid))
            if timeout_s > 0 and time.perf_counter() - start > timeout_s:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(SAMPLE_INTERVAL_S)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray grandchildren, if any
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "maxrss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "tree_rss_sampled_bytes": sampled,
        "timed_out": timed_out,
    }


def main() -> int:
    """CLI entry point, see the module docstring."""
    args = sys.argv[1:]
    if len(args) < 5 or args[3] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    result = measure(args[4:], args[0], args[1], float(args[2]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
