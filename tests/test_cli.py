"""Every ``python -m encore.<tool>`` ends bad input or missing data with one line naming the problem, not a
traceback (encore.cli.run); ENCORE_TRACEBACK=1 shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

CASES = [
    (["encore.reporting.publish", "--regenerate", "/nonexistent/study"], "/nonexistent/study"),
    (["encore.reporting.combine", "/nonexistent/a", "/nonexistent/b", "--out", "/tmp/x"], "/nonexistent/a"),
    (
        ["encore.editing.statistics_files", "export", "--manifest", "/nonexistent/m.json", "--out", "/tmp/x"],
        "/nonexistent/m.json",
    ),  # fmt: skip
    (["encore.measuring.scale_check", "--out", "/nonexistent/sc", "compare"], "/nonexistent/sc"),
    (["encore.plan", "--configfile", "/nonexistent/c.yaml"], "/nonexistent/c.yaml"),
    (["encore.reporting.precision_compounding", "/nonexistent/bf16", "/nonexistent/fp32"], "/nonexistent/bf16"),
    (["encore.reporting.statistics_sweep", "/nonexistent/sweep"], "/nonexistent/sweep"),
    (["encore.reporting.prediction", "/nonexistent/study", "/nonexistent/fp32"], "/nonexistent/study"),
    (["encore.benchmark"], "encore.measuring.benchmark"),  # a moved tool: its new name
]


def run(arguments, **environment):
    env = {**os.environ, "ENCORE_DATA_DIR": "/nonexistent/data", **environment}
    env.pop("ENCORE_TRACEBACK", None) if not environment else None
    return subprocess.run([sys.executable, "-m", *arguments], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=300)  # fmt: skip


@pytest.mark.parametrize("arguments, named", CASES, ids=[case[0][0] for case in CASES])
def test_bad_input_ends_in_one_line_naming_it(arguments, named):
    done = run(arguments)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and named in lines[0], done.stderr


def test_encore_traceback_lets_the_traceback_through():
    done = run(CASES[0][0], ENCORE_TRACEBACK="1")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_every_command_line_tool_ends_through_encore_cli_run():
    """A module run with ``python -m`` (a ``__main__`` block or a package's ``__main__.py``) calls encore.cli.run."""
    tools = [p for p in (REPO / "encore").rglob("*.py") if p.name == "__main__.py" or '__name__ == "__main__"' in
             p.read_text()]  # fmt: skip
    assert len(tools) >= 10
    assert [str(p.relative_to(REPO)) for p in tools if "from encore.cli import run" not in p.read_text()] == []
