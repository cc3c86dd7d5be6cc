"""The covariance-statistics N-sweep (issue 26, item 3): how many Wikipedia documents C0 needs, measured on SmolLM2.

    python tools/statistics_sweep.py prepare --out DIR [--n 100 300 1000 3000 10000]   # config + hparams per N
    python tools/statistics_sweep.py run --out DIR [--n ...]                            # Snakemake per N, timings
    python tools/statistics_sweep.py analyse --out DIR --publish docs/results/statistics-sweep

Every N runs the same 300 sequential CounterFact edits (order 0, batches of 100) with MEMIT (``plain``) and ENCORE
(``mpes_nc``), editing in bf16-mixed and scoring in fp32; only ``mom2_n_samples`` differs. C0 of N documents is taken
over the first N of one fixed permutation of the Wikipedia sample, so each smaller N is a subset of the larger ones.
The largest N is the reference (ref). Per N and edited layer l, with ||.|| the Frobenius norm:

    rel_C0(l) = ||C0_N(l) - C0_ref(l)|| / ||C0_ref(l)||
    rel_P(l)  = ||P_N(l) - P_ref(l)|| / ||P_ref(l)||      P = AlphaEdit's null-space projector of C0 (its threshold)
    rel_dW(l) = ||dW_N(l) - dW_ref(l)|| / ||dW_ref(l)||   dW = W after 300 edits - W unedited, per run

and for "all" layers sqrt(sum_l ||A_l - B_l||^2) / sqrt(sum_l ||B_l||^2). Per run: ES, PS, NS, S on the 300 edited
facts, and S_N - S_ref, NS_N - NS_ref paired over the same facts with 95% paired bootstrap intervals (the claims'
protocol: encore.reporting.claims). ``analyse`` writes sweep.csv (n, run, layer, quantity, value, low, high, note),
timings.csv, protocol.csv, one figure and results.md, whose every number is read from those CSVs
(``analyse --regenerate`` redraws the figure and results.md from the CSVs alone).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from encore.cli import one_line
from encore.evaluation import protocols
from encore.reporting.statistics_sweep import DIFFERENCES, RUNS, SCORES, render

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NS = (100, 300, 1000, 3000, 10000)
COLUMNS = ["n", "run", "layer", "quantity", "value", "low", "high", "note"]
SCORED = protocols.counterfact(protocols.EDITED_SO_FAR)  # the protocol of the per-fact ES, PS, NS of every edited fact


class SweepError(RuntimeError):
    """Bad input or missing results: the command ends with this one line."""


@dataclass(frozen=True)
class Protocol:
    """What every N of the sweep shares (issue 26, item 3)."""

    model: str = "smollm2-135m"
    dataset: str = "counterfact"
    method: str = "memit"
    num_edits: int = 300
    batch_size: int = 100
    snapshot_every: int = 1  # a snapshot per batch: a run cut short resumes from its last 100 edits
    order: str = "0"
    seed: int = 0
    precision: tuple[str, str] = ("bf16-mixed", "fp32")  # editing, scoring
    threads: int = 1
    statistics_threads: int = 2
    cores: int = 2


PROTOCOL = Protocol()


@dataclass(frozen=True)
class Sweep:
    """The sweep directory DIR (per N: N<N>/config.yaml, N<N>/hparams/, N<N>/snakemake.log; timings.csv) and where
    Snakemake, run from the repository root, writes results and benchmarks."""

    out: Path
    ns: tuple[int, ...] = DEFAULT_NS
    results: Path = REPO / "results"
    benchmarks: Path = REPO / "benchmarks"

    def __post_init__(self):
        if len(set(self.ns)) < 2 or min(self.ns) < 1:
            raise SweepError(f"--n {' '.join(map(str, self.ns))}: give at least two different positive N")
        object.__setattr__(self, "ns", tuple(sorted(set(self.ns))))
        object.__setattr__(self, "out", Path(self.out).resolve())

    @property
    def reference(self) -> int:
        return max(self.ns)

    def experiment(self, n: int) -> str:
        return f"statistics-sweep-N{n}"

    def folder(self, n: int) -> Path:
        return self.out / f"N{n}"

    def hparams(self, n: int, method: str) -> Path:
        return self.folder(n) / "hparams" / method.upper() / f"{PROTOCOL.model}.yaml"

    def statistics_manifest(self, n: int) -> Path:
        return self.results / self.experiment(n) / "statistics" / f"{PROTOCOL.method}.json"

    def snapshot(self, n: int, variant: str) -> Path:
        run = self.results / self.experiment(n) / PROTOCOL.method / variant / f"order{PROTOCOL.order}"
        return run / "snapshots" / f"edits_{PROTOCOL.num_edits:05d}"

    def metrics(self, n: int, variant: str, suffix: str = ".csv") -> Path:
        return self.snapshot(n, variant).parents[1] / "metrics" / f"edits_{PROTOCOL.num_edits:05d}{suffix}"

    def missing_run(self, n: int, variant: str) -> list[Path]:
        """The files of one run at N that do not exist: its snapshot, metrics and per-fact scores."""
        snapshot = self.snapshot(n, variant)
        wanted = [snapshot / "manifest.json", snapshot / "weights.safetensors", self.metrics(n, variant)]
        return [path for path in [*wanted, self.metrics(n, variant, ".records.csv")] if not path.exists()]

    def missing(self, n: int) -> list[Path]:
        runs = [path for variant in RUNS for path in self.missing_run(n, variant)]
        return [path for path in [self.statistics_manifest(n), *runs] if not path.exists()]

    def targets(self, n: int) -> list[str]:
        """What Snakemake makes for N (relative to the repository root): C0, and both runs' evaluations at 300."""
        paths = [self.statistics_manifest(n), *(self.metrics(n, variant) for variant in RUNS)]
        return [os.path.relpath(path, REPO) for path in paths]

    def hint(self, command: str = "run") -> str:
        return f"`python tools/statistics_sweep.py {command} --out {self.out} --n {' '.join(map(str, self.ns))}`"


# ------------------------------------------------------------------------------------------------------ prepare
def sweep_hparams(source: Path, n: int) -> str:
    """The text of ``source`` with only its top-level ``mom2_n_samples`` set to ``n`` (comments, variants and every
    other value kept as they are)."""
    text = source.read_text()
    line = f"mom2_n_samples: {n}  # statistics N-sweep (tools/statistics_sweep.py)"
    changed, count = re.subn(r"^mom2_n_samples:.*$", line, text, flags=re.MULTILINE)
    if count != 1:
        raise SweepError(f"{source}: expected one top-level mom2_n_samples line, found {count}")
    if yaml.safe_load(changed) != {**yaml.safe_load(text), "mom2_n_samples": n}:
        raise SweepError(f"{source}: replacing mom2_n_samples changed more than that value")
    return changed


def sweep_config(sweep: Sweep, n: int, resources: Path, data_dir: str | None) -> dict:
    """The experiment config of N (encore/schemas/config.schema.yaml): the editing metrics only, on 300 edits."""
    p = PROTOCOL
    evaluation = {"edited_facts": "all", "generation": "none", "generation_efficacy": "none", "downstream": "none",
                  "analysis": "none", "perplexity_tokens": 0}  # fmt: skip
    return {"experiment": sweep.experiment(n), "model": p.model, "dataset": p.dataset, "methods": [p.method],
            "variants": list(RUNS), "num_edits": p.num_edits, "batch_size": p.batch_size,
            "snapshot_every": p.snapshot_every, "order_sample": p.order, "seed": p.seed, "data_dir": data_dir,
            "records_files": None, "resources": str(resources), "hparams_dir": str(sweep.folder(n) / "hparams"),
            "threads": p.threads, "statistics_threads": p.statistics_threads, "statistics": {"source": "computed"},
            "device": "auto", "dtype": "float32", "tf32": False,
            "precision": dict(zip(("edit", "score"), p.precision)), "evaluation": evaluation}  # fmt: skip


def prepare(sweep: Sweep, resources: Path | None = None, data_dir: str | None = None) -> None:
    """DIR/N<N>/config.yaml (checked as the Snakefile checks it) and DIR/N<N>/hparams/{MEMIT,ALPHAEDIT}/<model>.yaml
    for every N; the caches (models, data, statistics) are shared: ``resources``, default DIR/resources."""
    from snakemake.utils import validate

    from encore.editing.hparams import Hyperparameters

    resources = Path(resources or sweep.out / "resources").resolve()
    sources = {
        method: REPO / "hparams" / method.upper() / f"{PROTOCOL.model}.yaml" for method in ("memit", "alphaedit")
    }
    memit, alphaedit = (Hyperparameters.from_yaml(path) for path in sources.values())
    shared = ("layers", "mom2_max_length", "mom2_dtype")
    if any(getattr(memit, key) != getattr(alphaedit, key) for key in shared):
        raise SweepError(f"{sources['alphaedit']}: {', '.join(shared)} differ from {sources['memit']}'s, so its "
                         "projector would not be of the C0 that MEMIT and ENCORE edit with")  # fmt: skip
    for n in sweep.ns:
        for method, source in sources.items():
            sweep.hparams(n, method).parent.mkdir(parents=True, exist_ok=True)
            sweep.hparams(n, method).write_text(sweep_hparams(source, n))
        config = sweep_config(sweep, n, resources, data_dir)
        validate(copy.deepcopy(config), str(REPO / "encore" / "schemas" / "config.schema.yaml"))  # fills defaults
        (sweep.folder(n) / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        print(f"N = {n}: {sweep.folder(n) / 'config.yaml'}")


# ------------------------------------------------------------------------------------------------------ run
def benchmark(path: Path, column: str = "s") -> float:
    """A Snakemake benchmark file's seconds (``s``: wall, ``cpu_time``: CPU); NaN when the job has not run."""
    return float(pd.read_csv(path, sep="\t")[column].iloc[0]) if path.exists() else math.nan


def write_timings(sweep: Sweep, walls: dict[int, float]) -> pd.DataFrame:
    """DIR/timings.csv, one row per N: the Snakemake call (wall_s: ``walls`` for the N just run, else the earlier
    value), the statistics job (its benchmark, wall and CPU), C0's own computation (the statistics manifest's seconds,
    ~0 when cached) and each run's edit job."""
    path = sweep.out / "timings.csv"
    earlier = pd.read_csv(path).set_index("n")["wall_s"].to_dict() if path.exists() else {}
    rows = []
    for n in sweep.ns:
        bench, manifest = sweep.benchmarks / sweep.experiment(n), sweep.statistics_manifest(n)
        statistics = bench / "statistics" / f"{PROTOCOL.method}.tsv"
        edits = {run: bench / PROTOCOL.method / variant / f"order{PROTOCOL.order}" for variant, run in RUNS.items()}
        computed = json.loads(manifest.read_text()).get("seconds", math.nan) if manifest.exists() else math.nan
        rows.append({"n": n, "wall_s": walls.get(n, earlier.get(n, math.nan)), "statistics_s": benchmark(statistics),
                     "statistics_cpu_s": benchmark(statistics, "cpu_time"), "statistics_compute_s": computed,
                     **{f"edit_{run}_s": benchmark(folder / f"edit_{PROTOCOL.num_edits:05d}.tsv")
                        for run, folder in edits.items()}})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def snakemake_command(sweep: Sweep, n: int) -> list[str]:
    """One N's Snakemake call. ``--nolock``: a sweep killed with its session leaves Snakemake's lock behind, and the
    next ``run`` resumes it (one N at a time, so nothing else writes there); the default profile reruns incomplete
    jobs."""
    local = Path(sys.executable).with_name("snakemake")  # the venv's, beside its python
    config = sweep.folder(n) / "config.yaml"
    return [str(local) if local.exists() else "snakemake", "--cores", str(PROTOCOL.cores),
            "--configfile", str(config), "--nolock", "--", *sweep.targets(n)]  # fmt: skip


def run(sweep: Sweep) -> None:
    """Snakemake for every N in order (from the repository root, logging to DIR/N<N>/snakemake.log); an N whose
    results are complete is skipped. Wall time per N and the jobs' benchmark times go to DIR/timings.csv."""
    for n in sweep.ns:
        if not (sweep.folder(n) / "config.yaml").exists():
            raise SweepError(f"{sweep.folder(n) / 'config.yaml'}: missing; {sweep.hint('prepare')} writes it")
    walls = {}
    for n in sweep.ns:
        if not sweep.missing(n):
            print(f"N = {n}: complete, skipped")
            continue
        log = sweep.folder(n) / "snakemake.log"
        print(f"N = {n}: running Snakemake (log: {log})", flush=True)
        started = time.perf_counter()
        with open(log, "a") as handle:
            code = subprocess.call(snakemake_command(sweep, n), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        if code:
            write_timings(sweep, walls)
            raise SweepError(f"N = {n}: Snakemake failed (exit {code}); see {log}")
        walls[n] = round(time.perf_counter() - started, 1)
        write_timings(sweep, walls)
    write_timings(sweep, walls)


# ------------------------------------------------------------------------------------------------------ analyse
def relative_distances(matrices: dict, reference: dict) -> dict:
    """{layer: ||A_l - B_l|| / ||B_l||, "all": sqrt(sum_l ||A_l - B_l||^2) / sqrt(sum_l ||B_l||^2)}, A = ``matrices``,
    B = ``reference`` (Frobenius norms, float64; the same layers)."""
    if set(matrices) != set(reference):
        raise SweepError(f"layers {sorted(matrices)} differ from the reference's {sorted(reference)}")
    difference = {layer: np.linalg.norm(np.asarray(matrices[layer], float) - reference[layer]) for layer in reference}
    norm = {layer: np.linalg.norm(np.asarray(reference[layer], float)) for layer in reference}
    distances = {layer: float(difference[layer] / norm[layer]) for layer in sorted(reference)}
    squares = [sum(value**2 for value in part.values()) for part in (difference, norm)]
    return {**distances, "all": float(math.sqrt(squares[0] / squares[1]))}


def projector(covariance: np.ndarray, threshold: float) -> np.ndarray:
    """AlphaEdit's P = U_0 U_0^T over the eigenvectors of C0 with eigenvalues < threshold (null_space_projector)."""
    import torch

    from encore.editing.editors import null_space_projector

    return null_space_projector(torch.from_numpy(np.asarray(covariance, float)), threshold).numpy()


def edit_scores(scores: np.ndarray, reference: np.ndarray) -> dict:
    """Intervals of ES, PS, NS = 100 x the mean of the per-fact es, ps, ns (rows: facts) and S = 3 / (1/ES + 1/PS +
    1/NS), bootstrapped over the facts; and of S_diff = S(scores) - S(reference), NS_diff likewise, row i of both
    arrays being the same fact, both resampled with the same indices (the claims' paired interval: claims.base.gap)."""
    from encore.reporting.claims.base import metric_stat
    from encore.reporting.claims.intervals import paired_bootstrap

    def difference(stat):
        return lambda ref, ours: stat(ours) - stat(ref)

    intervals = {metric: paired_bootstrap(metric_stat(metric), scores) for metric in SCORES}
    differences = {f"{m}_diff": paired_bootstrap(difference(metric_stat(m)), reference, scores) for m in DIFFERENCES}
    return {**intervals, **differences}


def fact_scores(path: Path) -> pd.DataFrame:
    """Per-fact es, ps, ns (index case_id) after the sweep's edits: the probability comparison on every edited fact."""
    frame = pd.read_csv(path)
    rows = frame[(frame["protocol"] == SCORED) & (frame["edits"] == PROTOCOL.num_edits)]
    if rows.empty:
        raise SweepError(f"{path}: no {SCORED} rows at {PROTOCOL.num_edits} edits")
    return rows.set_index("case_id")[["es", "ps", "ns"]].sort_index()


def paired(scores: pd.DataFrame, reference: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(ours, the reference's) es, ps, ns arrays on the facts both scored, one row per fact, in case-id order."""
    shared = reference.index.intersection(scores.index)
    if shared.empty:
        raise SweepError("no fact was scored both at this N and at the reference N")
    return scores.loc[shared].to_numpy(float), reference.loc[shared].to_numpy(float)


def covariances(manifest_path: Path) -> dict[int, np.ndarray]:
    """{layer: C0} (float64) of a statistics manifest, checked against its cache files' keys and checksums."""
    from encore.editing.covariance import load_statistic

    layers = json.loads(manifest_path.read_text())["layers"]
    resolve = lambda path: Path(path) if Path(path).is_absolute() else REPO / path  # noqa: E731
    return {int(layer): load_statistic(resolve(entry["path"]), entry["key"]).double().numpy()
            for layer, entry in layers.items()}  # fmt: skip


def snapshot_weights(snapshot: Path) -> dict[int, np.ndarray]:
    """{layer: W_l} (float64, d_model x d_ff) of a snapshot's weights.safetensors."""
    from safetensors.torch import load_file

    return {int(name.removeprefix("layer")): weight.double().numpy()
            for name, weight in load_file(str(snapshot / "weights.safetensors")).items()}  # fmt: skip


@functools.cache
def unedited_weights(resources: str, layers: tuple[int, ...]) -> dict[int, np.ndarray]:
    """{layer: W_l} of the unedited model (loaded once, from the sweep's model cache)."""
    from encore.models.architecture import read_weight
    from encore.models.loading import load_model

    model = load_model(PROTOCOL.model, cache_dir=Path(resources) / "models").model
    return {layer: read_weight(model, layer).detach().double().numpy() for layer in layers}


def row(n, run, layer, quantity, value, low=math.nan, high=math.nan, note="") -> dict:
    return dict(zip(COLUMNS, (n, run, layer, quantity, value, low, high, note)))


def shown(path: Path) -> str:
    """A path as a published page names it: relative to the repository when inside it."""
    return os.path.relpath(path, REPO) if Path(path).resolve().is_relative_to(REPO) else str(path)


def statistics_rows(sweep: Sweep, threshold: float) -> list[dict]:
    """rel_C0 and rel_P per layer and all layers, and the null-space dimension tr P per layer, for every N."""
    reference = covariances(sweep.statistics_manifest(sweep.reference))
    projectors = {layer: projector(c0, threshold) for layer, c0 in reference.items()}
    rows = []
    for n in sweep.ns:
        if not sweep.statistics_manifest(n).exists():
            rows.append(
                row(n, "statistics", "all", "available", 0.0, note=f"missing: {shown(sweep.statistics_manifest(n))}")
            )
            continue
        ours = covariances(sweep.statistics_manifest(n))
        ours_p = {layer: projector(c0, threshold) for layer, c0 in ours.items()}
        rows.append(row(n, "statistics", "all", "available", 1.0))
        for quantity, (a, b) in {"rel_C0": (ours, reference), "rel_P": (ours_p, projectors)}.items():
            rows += [row(n, "statistics", layer, quantity, v) for layer, v in relative_distances(a, b).items()]
        rows += [row(n, "statistics", layer, "null_dim", float(np.trace(p).round())) for layer, p in ours_p.items()]
    return rows


def run_rows(sweep: Sweep, variant: str, resources: str) -> list[dict]:
    """ES, PS, NS, S, the paired S and NS differences to the reference and rel_dW for one run at every N."""
    name, ref = RUNS[variant], sweep.reference
    if sweep.missing_run(ref, variant):
        note = f"missing: the reference N = {ref}'s {shown(sweep.missing_run(ref, variant)[0])}"
        return [row(n, name, "all", "available", 0.0, note=note) for n in sweep.ns]
    reference = fact_scores(sweep.metrics(ref, variant, ".records.csv"))
    reference_w = snapshot_weights(sweep.snapshot(ref, variant))
    unedited = unedited_weights(resources, tuple(sorted(reference_w)))
    reference_dw = {layer: w - unedited[layer] for layer, w in reference_w.items()}
    rows = []
    for n in sweep.ns:
        if sweep.missing_run(n, variant):
            rows.append(
                row(n, name, "all", "available", 0.0, note=f"missing: {shown(sweep.missing_run(n, variant)[0])}")
            )
            continue
        scores, ref_scores = paired(fact_scores(sweep.metrics(n, variant, ".records.csv")), reference)
        rows += [row(n, name, "all", "available", 1.0), row(n, name, "all", "facts", float(len(scores)))]
        rows += [row(n, name, "all", q, i.estimate, i.low, i.high) for q, i in edit_scores(scores, ref_scores).items()]
        dw = {layer: w - unedited[layer] for layer, w in snapshot_weights(sweep.snapshot(n, variant)).items()}
        rows += [row(n, name, layer, "rel_dW", v) for layer, v in relative_distances(dw, reference_dw).items()]
    return rows


def protocol_rows(sweep: Sweep, threshold: float, config: dict) -> dict:
    """What results.md states about the protocol: the reference's config and statistics manifest, the seeds and
    code commits of every snapshot manifest."""
    from encore.reporting.claims.intervals import RESAMPLES, SEED

    statistics = json.loads(sweep.statistics_manifest(sweep.reference).read_text())
    key = next(iter(statistics["layers"].values()))["key"]
    manifests = [json.loads((sweep.snapshot(n, v) / "manifest.json").read_text())
                 for n in sweep.ns for v in RUNS if (sweep.snapshot(n, v) / "manifest.json").exists()]  # fmt: skip
    commits = {m["code"].get("git_commit", "?") + ("+dirty" if m["code"].get("git_dirty") else "")
               for m in [statistics, *manifests]}  # fmt: skip
    return {**{k: config[k] for k in ("model", "dataset", "num_edits", "batch_size", "threads", "statistics_threads")},
            "order": config["order_sample"], "seed": " ".join(sorted({str(m["seed"]) for m in manifests})) or "—",
            "ns": " ".join(map(str, sweep.ns)), "reference_n": sweep.reference,
            "corpus": Path(statistics["corpus"]["path"]).name, "corpus_sha256": statistics["corpus"]["sha256"],
            "max_length": key["max_length"], "mom2_dtype": key["dtype"],
            "layers": " ".join(sorted(statistics["layers"], key=int)), "nullspace_threshold": threshold,
            "edit_precision": config["precision"]["edit"], "score_precision": config["precision"]["score"],
            "device": statistics["execution"]["device"], "bootstrap_resamples": RESAMPLES, "bootstrap_seed": SEED,
            "code_commits": " ".join(sorted(commits))}  # fmt: skip


def analyse(sweep: Sweep, publish: Path) -> None:
    """sweep.csv, timings.csv and protocol.csv under ``publish``, then the figure and results.md from them."""
    from encore.editing.hparams import Hyperparameters

    manifest, ref = sweep.statistics_manifest(sweep.reference), sweep.reference
    if not manifest.exists():
        raise SweepError(f"{manifest}: missing, so the reference N = {ref} has no C0; {sweep.hint()} makes it")
    if not sweep.hparams(ref, "alphaedit").exists():
        raise SweepError(f"{sweep.hparams(ref, 'alphaedit')}: missing; {sweep.hint('prepare')} writes it")
    threshold = Hyperparameters.from_yaml(sweep.hparams(ref, "alphaedit")).nullspace_threshold
    config = yaml.safe_load((sweep.folder(ref) / "config.yaml").read_text())
    rows = statistics_rows(sweep, threshold) + [r for v in RUNS for r in run_rows(sweep, v, config["resources"])]
    publish.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(publish / "sweep.csv", index=False, float_format="%.6g")
    write_timings(sweep, {}).to_csv(publish / "timings.csv", index=False)
    protocol = protocol_rows(sweep, threshold, config)
    pd.Series(protocol, name="value").rename_axis("key").to_csv(publish / "protocol.csv")
    for note in (r["note"] for r in rows if r["quantity"] == "available" and r["value"] == 0):
        print(f"statistics_sweep: {note}", file=sys.stderr)
    render(publish)


# ------------------------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "run", "analyse"):
        command = commands.add_parser(name)
        command.add_argument("--out", required=name != "analyse", help="the sweep directory DIR")
        command.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_NS), help="the Ns (largest: reference)")
    prepare_command, analyse_command = commands.choices["prepare"], commands.choices["analyse"]
    prepare_command.add_argument("--resources", help="caches shared by every N (default: DIR/resources)")
    prepare_command.add_argument("--data-dir", default=os.environ.get("ENCORE_DATA_DIR"), help="$ENCORE_DATA_DIR")
    analyse_command.add_argument("--publish", required=True, type=Path, help="e.g. docs/results/statistics-sweep")
    analyse_command.add_argument("--regenerate", action="store_true", help="only redraw from the published CSVs")
    args = parser.parse_args(argv)
    try:
        if args.command == "analyse" and args.regenerate:
            return render(args.publish)
        if args.out is None:
            raise SweepError("analyse: --out DIR is needed (or --regenerate)")
        sweep = Sweep(Path(args.out), tuple(args.n))
        if args.command == "prepare":
            data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
            prepare(sweep, Path(args.resources) if args.resources else None, data_dir)
        elif args.command == "run":
            run(sweep)
        else:
            analyse(sweep, args.publish)
    except (SweepError, ValueError, OSError) as error:
        raise SystemExit(f"statistics_sweep: {one_line(error)}") from None


if __name__ == "__main__":
    main()
