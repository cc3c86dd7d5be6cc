"""The pinned environment: requirements.lock (every package, with hashes) against what is installed.

    python -m encore.environment --check     # exit 1 and list the differences if any

``make setup`` installs from the lock and runs the check; every run manifest records the lock's
checksum and whether the running environment matched it (``code_version`` in encore.experiment).
Regenerate the lock from pyproject.toml with ``make lock`` (pip-compile, see the Makefile).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK_FILES = ("requirements.lock", "requirements-model.lock")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(paths=None) -> dict[str, str]:
    """{normalised name: version} of every ``name==version`` line of the lock files."""
    versions = {}
    for path in paths or [REPO / name for name in LOCK_FILES]:
        for line in Path(path).read_text().splitlines():
            match = _PIN.match(line.strip())
            if match:
                versions[normalise(match.group(1))] = match.group(2)
    return versions


def installed_versions() -> dict[str, str]:
    return {normalise(d.metadata["Name"]): d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}


def differences(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """Lines describing each locked package that is missing or installed at another version."""
    problems = []
    for name, version in sorted(locked.items()):
        if name not in installed:
            problems.append(f"{name}: locked {version}, not installed")
        elif installed[name] != version:
            problems.append(f"{name}: locked {version}, installed {installed[name]}")
    return problems


def lock_digest(paths=None) -> str | None:
    """sha256 over the lock files (None outside a checkout that has them)."""
    digest = hashlib.sha256()
    for path in paths or [REPO / name for name in LOCK_FILES]:
        if not Path(path).exists():
            return None
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def summary() -> dict:
    """What a run manifest records about the environment."""
    digest = lock_digest()
    if digest is None:
        return {"lock_sha256": None, "matches_lock": None}
    problems = differences(locked_versions(), installed_versions())
    return {"lock_sha256": digest, "matches_lock": not problems, "lock_differences": problems[:20]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="compare the installed packages with requirements.lock")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when they differ")
    args = parser.parse_args(argv)
    problems = differences(locked_versions(), installed_versions())
    for problem in problems:
        print(problem)
    if not problems:
        print(f"environment matches the lock ({len(locked_versions())} packages)")
    return 1 if (problems and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
