"""Progress on stderr: a bar on a TTY, periodic plain lines otherwise, nothing when quiet."""

from __future__ import annotations

import io

from evalkit.progress import NoProgress, Progress, make_progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_tty():
    buf = io.StringIO()
    p = Progress(buf, interval=0.0, delay=0.0)
    p.set_total(1000)
    p(500, 2**20)
    p(1000, 2**20)
    p.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("evalkit:  50.0%") and "500 rows" in lines[0] and "ETA" in lines[0]
    assert "\r" not in buf.getvalue()


def test_bar_on_a_tty_is_redrawn_in_place():
    buf = FakeTTY()
    p = Progress(buf, interval=0.0, delay=0.0)
    p.set_total(100)
    p(50, 10)
    p(100, 10)
    p.close()
    out = buf.getvalue()
    assert out.count("\r") == 2 and "[############" in out and out.endswith("\n")


def test_short_runs_print_nothing_and_quiet_prints_nothing():
    buf = io.StringIO()
    p = Progress(buf)  # default delay: nothing within the first half second
    p(10, 10)
    p.close()
    assert buf.getvalue() == ""
    q = make_progress(quiet=True, stream=buf)
    assert isinstance(q, NoProgress)
    q(10, 10)
    q.close()
    assert buf.getvalue() == ""
