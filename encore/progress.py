"""Progress of long loops: a tqdm bar on a terminal, plain timestamped lines in log files.

Snakemake redirects each job's output to its log, where a bar's carriage returns make an unreadable
single line; there ``Progress`` prints one line at most every ``every`` seconds (and at the end):

    12:04:31 statistics: 240/1000 documents (24%), 61,440 tokens, 0:00:20 elapsed, ETA 0:01:03
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta


def clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def log(message: str) -> None:
    """One timestamped line on stdout (the job's log under Snakemake)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Progress:
    def __init__(self, total: int, description: str, unit: str = "items", every: float = 30.0, stream=None):
        self.total, self.description, self.unit, self.every = total, description, unit, every
        self.done, self.info, self.started = 0, {}, time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self._last = self.started
        self._bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=description, unit=unit[:-1] if unit.endswith("s") else unit, file=self.stream
            )

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        self.info.update(info)
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix({k: f"{v:,}" if isinstance(v, int) else v for k, v in self.info.items()})
            return
        now = time.perf_counter()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {v:,} {k}" if isinstance(v, int) else f", {k} {v}" for k, v in self.info.items())
        eta = ""
        if 0 < self.done < self.total:
            eta = f", ETA {clock(elapsed / self.done * (self.total - self.done))}"
        return (
            f"{time.strftime('%H:%M:%S')} {self.description}: {self.done}/{self.total} {self.unit}{percent}{extra}, "
            f"{clock(elapsed)} elapsed{eta}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
