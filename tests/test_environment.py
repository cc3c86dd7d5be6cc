"""The locks and the environment check (encore/environment.py, tools/lock_cuda.py): offline, no downloads.

requirements-cuda.lock must be requirements.lock with torch swapped for the CUDA build of the same release
plus the CUDA packages that build requires; the conda files must carry exactly the locks' pins; the check
must name the lock it compares against, and manifests must record it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.version import Version

from encore import environment

CPU, CUDA, MODEL = (REPO / name for name in ("requirements.lock", "requirements-cuda.lock", "requirements-model.lock"))
CONDA_ENV, POST_DEPLOY = REPO / "workflow/envs/encore.yaml", REPO / "workflow/envs/encore.post-deploy.sh"


def load_generator():
    spec = importlib.util.spec_from_file_location("lock_cuda", REPO / "tools/lock_cuda.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_requires_in_header() -> list[Requirement]:
    """The Requires-Dist lines of torch that tools/lock_cuda.py wrote into the CUDA lock's header."""
    header = CUDA.read_text().split("\ntorch==", 1)[0]
    block = header.split("Requires-Dist (Linux, Python", 1)[1].split("\n#\n", 1)[0]
    return [Requirement(line.removeprefix("#").strip()) for line in block.splitlines()[1:]]


def test_cuda_lock_keeps_every_cpu_pin_but_torch():
    cpu, cuda = environment.lock_blocks(CPU), environment.lock_blocks(CUDA)
    shared = set(cpu) - {"torch"}
    assert shared <= set(cuda), f"missing from the CUDA lock: {sorted(shared - set(cuda))}; run make lock-cuda"
    changed = sorted(name for name in shared if cuda[name][:2] != cpu[name][:2])
    assert not changed, f"version or hashes differ from requirements.lock: {changed}; run make lock-cuda"
    added = set(cuda) - set(cpu)
    assert added and all(name.startswith(("nvidia-", "cuda-", "triton")) for name in added), sorted(added)


@pytest.mark.parametrize("path", [CPU, CUDA, MODEL], ids=lambda p: p.name)
def test_every_requirement_is_pinned_with_a_hash(path):
    blocks = environment.lock_blocks(path)
    assert blocks
    for line in path.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ \\$", line), (
                f"{path.name}: not a pin with hashes: {line}"
            )
    without = [name for name, (_, hashes, _) in blocks.items() if not hashes]
    assert not without, f"{path.name}: no --hash for {without}"
    text = path.read_text()
    assert text.count("--hash=sha256:") == sum(len(h) for _, h, _ in blocks.values())  # no malformed hash
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hashes, _ in blocks.values() for h in hashes)


def test_cuda_torch_is_the_cuda_build_of_the_cpu_release():
    cpu, cuda = environment.lock_blocks(CPU), environment.lock_blocks(CUDA)
    cpu_torch, cuda_torch = Version(cpu["torch"][0]), Version(cuda["torch"][0])
    assert cpu_torch.local == "cpu" and cuda_torch.local is None
    assert cuda_torch.public == cpu_torch.public
    assert not set(cpu["torch"][1]) & set(cuda["torch"][1])  # other files, not the CPU wheel


def test_cuda_lock_satisfies_torchs_linux_requirements():
    """Every Requires-Dist of torch that applies on Linux x86_64 (CPU lock's Python) is pinned and satisfied."""
    cuda = environment.lock_blocks(CUDA)
    python = environment.lock_python(CPU)
    marker_env = load_generator().marker_environment(python)
    requires = torch_requires_in_header()
    assert any(r.name.startswith("nvidia-") for r in requires)  # the header holds the CUDA build's metadata
    for requirement in requires:
        if requirement.marker is None or requirement.marker.evaluate({**marker_env, "extra": ""}):
            name = environment.normalise(requirement.name)
            assert name in cuda, f"torch requires {requirement}; not in requirements-cuda.lock"
            assert Version(cuda[name][0]) in requirement.specifier, f"{name}=={cuda[name][0]} misses {requirement}"
    for name, (_, _, block) in cuda.items():  # every added package is required by a locked one
        if name not in environment.lock_blocks(CPU):
            parents = [p for p in re.findall(r"#\s+(?:via )?([a-z0-9][a-z0-9._-]*)$", block, flags=re.M) if p != "via"]
            assert parents and all(p in cuda for p in parents), (name, parents)


def conda_pins(items: list[str]) -> dict[str, tuple[str, list[str]]]:
    pins = {}
    for item in items:
        if not item.startswith("-"):
            spec, *options = item.split()
            name, version = spec.split("==")
            pins[environment.normalise(name)] = (version, [o.removeprefix("--hash=sha256:") for o in options])
    return pins


def parse_as_pip(items: list[str], tmp_path) -> int:
    """What conda does with a pip section: the items as lines of a requirements file, read by pip's parser."""
    from pip._internal.network.session import PipSession
    from pip._internal.req.req_file import parse_requirements

    path = tmp_path / "requirements.txt"
    path.write_text("\n".join(re.sub(r"^-r (\S+)", lambda m: f"-r {REPO / m.group(1)}", i) for i in items) + "\n")
    return len(list(parse_requirements(str(path), session=PipSession())))


def test_rules_conda_env_is_the_cuda_lock(tmp_path):
    env = yaml.safe_load(CONDA_ENV.read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == f"python={environment.lock_python(CPU)}"
    items = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "--require-hashes" in items
    pins = conda_pins(items)
    assert pins == {name: entry[:2] for name, entry in environment.lock_blocks(CUDA).items()}
    assert parse_as_pip(items, tmp_path) == len(pins)  # no option pip rejects in a requirements file (--no-deps)
    model = environment.lock_blocks(MODEL)
    for name, (version, hashes, _) in model.items():
        assert f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes) in POST_DEPLOY.read_text()
    generator = load_generator()  # byte for byte what make lock-cuda writes: nobody edited them by hand
    assert CONDA_ENV.read_text() == generator.render_conda(CUDA, environment.lock_python(CPU))
    assert POST_DEPLOY.read_text() == generator.render_post_deploy(MODEL)


def test_environment_yml_installs_the_cpu_lock(tmp_path):
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert f"python={environment.lock_python(CPU)}" in env["dependencies"]
    items = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert items == ["--require-hashes", "-r requirements.lock"]
    assert parse_as_pip(items, tmp_path) == len(environment.lock_blocks(CPU))


def test_detect_lock_follows_the_installed_torch():
    cpu_torch, cuda_torch = environment.lock_blocks(CPU)["torch"][0], environment.lock_blocks(CUDA)["torch"][0]
    assert environment.detect_lock({"torch": cpu_torch})[0] == "cpu"
    kind, why = environment.detect_lock({"torch": cuda_torch})
    assert kind == "cuda" and "requirements-cuda.lock" in why
    assert environment.detect_lock({"torch": "2.99.0+cpu"})[0] == "cpu"
    assert environment.detect_lock({"torch": "2.99.0+cu130"})[0] == "cuda"
    assert environment.detect_lock({})[0] == "cpu"
    assert environment.select_lock("requirements-cuda.lock", {"torch": cpu_torch})[0] == "cuda"
    assert environment.select_lock("cpu", {"torch": cuda_torch})[0] == "cpu"
    with pytest.raises(SystemExit, match="--lock gpu: unknown lock"):
        environment.select_lock("gpu")


def installed_as(lock_path, monkeypatch, drop=()):
    versions = {**environment.locked_versions([lock_path, MODEL])}
    for name in drop:
        versions.pop(name)
    monkeypatch.setattr(environment, "installed_versions", lambda: versions)


def test_summary_records_the_matched_lock(monkeypatch):
    installed_as(CUDA, monkeypatch)
    record = environment.summary()
    assert record["lock"] == "requirements-cuda.lock" and record["matches_lock"] is True
    assert record["lock_sha256"] == hashlib.sha256(CUDA.read_bytes() + MODEL.read_bytes()).hexdigest()
    assert environment.recorded_lock(record) == "requirements-cuda.lock"
    installed_as(CUDA, monkeypatch, drop=["nvidia-cublas"])
    record = environment.summary()
    assert record["matches_lock"] is False and any("nvidia-cublas" in d for d in record["lock_differences"])
    installed_as(CPU, monkeypatch)
    record = environment.summary()
    assert record["lock"] == "requirements.lock" and record["matches_lock"] is True
    # the CPU lock's checksum is computed as before the CUDA lock existed: old and new manifests compare
    assert record["lock_sha256"] == hashlib.sha256(CPU.read_bytes() + MODEL.read_bytes()).hexdigest()
    assert environment.summary("cuda")["matches_lock"] is False  # CPU torch against the CUDA lock
    monkeypatch.setattr(environment, "REPO", REPO / "no-such-checkout")  # a wheel install: no lock files
    record = environment.summary()
    assert record["lock"] is None and record["lock_sha256"] is None and environment.recorded_lock(record) is None


def test_recorded_lock_reads_old_manifests():
    assert environment.recorded_lock({"lock_sha256": "ab" * 32, "matches_lock": True}) == "requirements.lock"
    assert environment.recorded_lock({"lock_sha256": None, "matches_lock": None}) is None
    assert environment.recorded_lock(None) is None


def test_check_names_the_lock_and_fails_on_a_difference(monkeypatch, capsys):
    installed_as(CUDA, monkeypatch)
    assert environment.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "checking against requirements-cuda.lock + requirements-model.lock (CUDA lock" in out
    assert "environment matches requirements-cuda.lock" in out
    assert environment.main(["--check", "--lock", "cpu"]) == 1
    assert "torch: locked 2.13.0+cpu, installed 2.13.0" in capsys.readouterr().out


def test_same_version_is_pep440_equality():
    assert environment.same_version("13.0.3", "13.0.3.0")
    assert not environment.same_version("2.13.0+cpu", "2.13.0")
    assert not environment.same_version("1.0", "1.1")


class FakeIndex:
    """tools/lock_cuda.Index without the network: {name: {version: requires}}; one wheel per release."""

    def __init__(self, releases):
        self.releases = releases

    def files(self, name):
        return {Version(v): [{"filename": f"{name}-{v}.whl", "v": (name, v), "hashes": {"sha256": f"{name}{v}"}}]
                for v in self.releases[name]}  # fmt: skip

    def requires(self, files):
        name, version = files[0]["v"]
        return [Requirement(r) for r in self.releases[name][version]]


def test_resolver_follows_markers_extras_and_learns_from_conflicts():
    generator = load_generator()
    cpu = {"torch": ("2.0.0+cpu", [], ""), "filelock": ("3.0", [], "")}
    index = FakeIndex({
        "torch": {"2.0.0": ["a[x]==1.0; platform_system == 'Linux'", "b>=2", "filelock>=2",
                            "winonly; sys_platform == 'win32'", "c; python_version < '3.10'"]},
        "a": {"1.0": ["c; extra == 'x'", "d; extra == 'y'"], "1.1": []},
        "b": {"2.0": [], "3.0": [], "3.5": []},
        "c": {"1.0": ["b<3"]},
    })  # fmt: skip
    pinned, requires = generator.resolve_all(cpu, {}, index, "3.11")
    assert {name: entry[0] for name, entry in pinned.items()} == {"torch": "2.0.0", "a": "1.0", "b": "2.0", "c": "1.0"}
    assert pinned["c"][2] == {"a"} and pinned["b"][2] == {"torch", "c"}
    assert [str(r) for r in requires][0] == 'a[x]==1.0; platform_system == "Linux"'
    # a previous pin that still fits is kept (b 2.0 over the newest 2.x), one that no longer fits is not
    assert generator.resolve_all(cpu, {"b": ("3.0",)}, index, "3.11")[0]["b"][0] == "2.0"
    index.releases["b"] = {"2.0": [], "2.5": [], "3.5": []}
    assert generator.resolve_all(cpu, {"b": ("2.0",)}, index, "3.11")[0]["b"][0] == "2.0"
    with pytest.raises(
        SystemExit, match="torch needs filelock>=2, requirements.lock has filelock==1.0"
    ):  # a shared pin torch rejects
        generator.resolve_all({**cpu, "filelock": ("1.0", [], "")}, {}, index, "3.11")


def test_render_lock_keeps_shared_blocks_and_the_unsafe_section():
    generator = load_generator()
    cpu_text = (
        "#\n# autogenerated by pip-compile with Python 3.11\n#\n"
        "filelock==3.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via torch\n"
        "torch==2.0.0+cpu \\\n    --hash=sha256:" + "b" * 64 + "\n    # via encore-bench (pyproject.toml)\n"
        "\n# The following packages are considered to be unsafe in a requirements file:\n"
        "setuptools==80.0 \\\n    --hash=sha256:" + "c" * 64 + "\n    # via torch\n"
    )
    pinned = {
        "torch": ("2.0.0", [{"hashes": {"sha256": "d" * 64}}], set(), set()),
        "nvidia-x": ("1.0", [{"hashes": {"sha256": "e" * 64}}], {"torch"}, set()),
    }
    text = generator.render_lock(cpu_text, pinned, [Requirement("nvidia-x==1.0")], "3.11")
    blocks = environment.lock_blocks(text=text)
    assert list(blocks) == ["filelock", "nvidia-x", "torch", "setuptools"]
    assert blocks["filelock"][2] in cpu_text and blocks["setuptools"][2] in cpu_text
    assert blocks["torch"][:2] == ("2.0.0", ["d" * 64]) and "# via encore-bench (pyproject.toml)" in blocks["torch"][2]
    assert text.index("considered to be unsafe") < text.index("setuptools==")
    assert "#   nvidia-x==1.0" in text
