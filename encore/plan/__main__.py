"""``python -m encore.plan``: print the plan of an experiment (encore.plan.main)."""

from encore.cli import run
from encore.plan import main

run(main)
