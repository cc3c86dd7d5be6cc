"""Shared start-up for the rule scripts: log redirection and thread count."""

import sys

import torch


def start(snakemake):
    log = open(snakemake.log[0], "w", buffering=1)
    sys.stdout = sys.stderr = log
    torch.set_num_threads(snakemake.threads)
