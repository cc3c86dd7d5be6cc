"""Shared start-up for the rule scripts: log redirection, thread count, and a one-line error on the console."""

import errno
import sys
import traceback
from pathlib import Path

import torch

from encore.cli import one_line


def start(snakemake):
    log = open(snakemake.log[0], "w", buffering=1)
    console = sys.stderr
    sys.stdout = sys.stderr = log
    torch.set_num_threads(snakemake.threads)

    def report(kind, error, trace):
        """The traceback goes to the log; the console (Snakemake's output) gets the error's first line."""
        traceback.print_exception(kind, error, trace, file=log)
        message = one_line(error)
        if getattr(error, "errno", None) == errno.ENOSPC:
            written = getattr(error, "filename", None) or Path(snakemake.output[0]).parent
            message += f" (writing {written}); free space and rerun"
        print(f"{snakemake.rule} failed: {kind.__name__}: {message}", file=console, flush=True)

    sys.excepthook = report
