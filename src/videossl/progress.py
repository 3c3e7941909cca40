"""Progress of the long steps (ingest, rendering the world, probe-eval, embed): a live bar on a
terminal, and in a log that is not one (a KFP pod, CI, `make run > log`) a plain line now and then,
never a stream of carriage returns. Log messages (warnings of quarantined files) print above the
bar instead of breaking its line."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterable, Iterator, TextIO

PLAIN_EVERY_S = 30.0  # a log gets a line at most this often (and one at the end)


class Progress:
    """`for x in Progress(items, desc=...)`, or `with Progress(total=n, desc=...) as p: p.update()`."""

    def __init__(self, iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it",
                 stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s, self.n, self.t0 = every_s, 0, time.monotonic()
        self._last = self.t0
        self._bar = None
        self._redirect = contextlib.ExitStack()
        if self.live:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5,
                             file=self.stream)
            self._redirect.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger()]))

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s and self.n != self.total:  # the last one is close()'s
            self._last = now
            self._line(now)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._redirect.close()
        elif self.n and self._last != -1.0:
            self._line(time.monotonic(), done=True)
        self._last = -1.0  # closed: no second end line

    def _line(self, now: float, done: bool = False) -> None:
        elapsed = now - self.t0
        if self.total:
            share = self.n / self.total
            eta = "" if done or not self.n else f", eta {elapsed * (1 - share) / share:.0f} s"
            text = f"{self.desc}: {self.n}/{self.total} {self.unit} ({share:.0%}), {elapsed:.0f} s{eta}"
        else:
            text = f"{self.desc}: {self.n} {self.unit}, {elapsed:.0f} s"
        print(text, file=self.stream, flush=True)
