"""Progress lines: a bar on a terminal, periodic plain lines in a log, warnings above the bar."""
from __future__ import annotations

import io
import logging

from videossl.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_with_an_eta_and_one_at_the_end():
    log = io.StringIO()
    seen = list(Progress(range(5), desc="probes", unit="jobs", stream=log, every_s=0))
    assert seen == list(range(5))
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("probes: 1/5 jobs (20%), ") and "eta" in lines[0]
    assert lines[-1].startswith("probes: 5/5 jobs (100%), ") and "eta" not in lines[-1]
    assert len(lines) == 5  # every update (every_s=0), and no second end line


def test_a_log_is_not_flooded():
    log = io.StringIO()
    with Progress(total=1000, desc="features", unit="clips", stream=log, every_s=3600) as bar:
        for _ in range(1000):
            bar.update()
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[-1]]
    assert log.getvalue().startswith("features: 1000/1000 clips (100%)")


def test_on_a_terminal_warnings_print_above_the_bar(monkeypatch):
    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    handler = logging.StreamHandler()  # the console handler a CLI has (logging.basicConfig), on the terminal
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        for i in Progress(range(3), desc="ingest", unit="videos"):
            if i == 1:
                logging.getLogger("videossl.test").warning("quarantined x.mp4: truncated")
    finally:
        root.removeHandler(handler)
    text = term.getvalue()
    assert "ingest" in text and "3/3" in text
    # the warning is a line of its own (the bar is cleared, the message written, the bar redrawn)
    assert "quarantined x.mp4: truncated\n" in text
    assert any(line == "quarantined x.mp4: truncated" for line in text.replace("\r", "\n").splitlines())
