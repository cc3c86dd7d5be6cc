"""The collect_results rule: an experiment's per-snapshot files gathered into the CSVs every table and figure is
made of (metrics, norms, ledger, runs; records and downstream records where written), with their checksums.

``collect`` checks each snapshot's ledger and norms against its manifest and refuses evaluations scored in different
precisions; ``verify_collected`` checks the checksums before anything reads the CSVs (the paper_outputs rule, a
study's publishing). ``completed_results`` lists what a study in progress has finished (tools/study.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from encore.data.files import file_sha256


def read_csvs(paths) -> pd.DataFrame:
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(f"missing result files (run the pipeline for them first): {', '.join(missing)}")
    return pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)


COLLECTED = ("metrics.csv", "norms.csv", "ledger.csv", "runs.csv")
# per-record editing scores and per-item downstream predictions; collected folders from before them lack them
OPTIONAL_COLLECTED = ("records.csv", "downstream_records.csv")
CHECKSUMS = "sha256.json"


def collect(
    metric_files, norm_files, ledger_files, manifest_files, out_dir: Path, record_files=(), downstream_files=()
) -> None:
    """metrics.csv, norms.csv, ledger.csv and runs.csv (hyperparameters and provenance of each run's
    last snapshot) in ``out_dir``: everything the tables and figures are made of; with ``record_files`` also
    records.csv (the per-record editing scores of every evaluation), with ``downstream_files``
    downstream_records.csv (the per-item downstream predictions); then sha256.json, their
    checksums, which ``verify_collected`` checks before they are used. Each snapshot's ledger and norms are
    checked against its manifest first."""
    from encore.editing.snapshots import read_verified_manifest

    scored_in = score_precisions(metric_files)  # before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in manifest_files:
        read_verified_manifest(Path(path).parent, names=["ledger.csv", "norms.csv"])
    read_csvs(metric_files).to_csv(out_dir / "metrics.csv", index=False)
    read_csvs(norm_files).to_csv(out_dir / "norms.csv", index=False)
    read_csvs(ledger_files).to_csv(out_dir / "ledger.csv", index=False)
    (out_dir / "records.csv").unlink(missing_ok=True)
    if record_files:  # 12 significant digits, as each evaluation wrote them (encore.evaluation.rows)
        read_csvs(record_files).to_csv(out_dir / "records.csv", index=False, float_format="%.12g")
    (out_dir / "downstream_records.csv").unlink(missing_ok=True)
    if downstream_files:
        read_csvs(downstream_files).to_csv(out_dir / "downstream_records.csv", index=False)
    runs = {}
    for path in manifest_files:
        manifest = json.loads(Path(path).read_text())
        key = (manifest["method"], manifest["variant"], manifest["data"]["order_file"]["sample"])
        if key not in runs or manifest["edits_done"] > runs[key]["edits"]:
            runs[key] = run_row(manifest, scored_in)
    pd.DataFrame(list(runs.values())).to_csv(out_dir / "runs.csv", index=False)
    names = COLLECTED + tuple(name for name in OPTIONAL_COLLECTED if (out_dir / name).exists())
    checksums = {name: file_sha256(out_dir / name) for name in names}
    (out_dir / CHECKSUMS).write_text(json.dumps(checksums, indent=1) + "\n")


def run_row(manifest: dict, scored_in: str) -> dict:
    """The runs.csv row of a run from the manifest of its last snapshot: labels, the hyperparameters the tables
    print, seed, batch size, precisions and code version."""
    execution, hp = manifest.get("execution", {}), manifest["hparams"]
    return {
        "method": manifest["method"],
        "variant": manifest["variant"],
        "order": manifest["data"]["order_file"]["sample"],
        "edits": manifest["edits_done"],
        "model": manifest["model_name"],
        "layers": " ".join(map(str, hp["layers"])),
        "lambda_p": hp["mom2_update_weight"],
        "lambda_n": hp["norm_lambda"],
        "mpes": hp["mpes"],
        "mpes_rule": hp["mpes_rule"],
        "emmet_lambda": hp["emmet_lambda"],
        "nullspace_threshold": hp["nullspace_threshold"],
        "alphaedit_l2": hp["alphaedit_l2"],
        "rect_fraction": hp.get("rect_fraction"),  # absent from manifests written before RECT/PRUNE
        "prune_log_base": hp.get("prune_log_base"),
        "v_num_grad_steps": hp["v_num_grad_steps"],
        "v_lr": hp["v_lr"],
        "clamp_norm_factor": hp["clamp_norm_factor"],
        "kl_factor": hp["kl_factor"],
        "mom2_n_samples": hp["mom2_n_samples"],
        "seed": manifest["seed"],
        "batch_size": manifest["batch_size"],
        "edit_precision": execution.get("precision", "fp32"),
        "score_precision": scored_in,
        "code": json.dumps(manifest.get("code")),
    }


def completed_results(results: Path) -> dict[str, list[Path]]:
    """``collect``'s inputs from what an experiment has finished so far (a study in progress): every snapshot whose
    manifest is written (a snapshot's last file) and every evaluation whose metrics CSV is written (an evaluation's
    last file), the unedited model's included. Keys: metrics, norms, ledgers, manifests, records, downstream."""
    results = Path(results)
    manifests = sorted(results.glob("*/*/order*/snapshots/edits_*/manifest.json"))
    metrics = sorted(results.glob("*/*/order*/metrics/edits_*[0-9].csv")) + sorted(
        results.glob("unedited/order*/metrics.csv")
    )
    return {
        "metrics": metrics,
        "norms": [path.with_name("norms.csv") for path in manifests],
        "ledgers": [path.with_name("ledger.csv") for path in manifests],
        "manifests": manifests,
        "records": [path.with_suffix(".records.csv") for path in metrics],
        "downstream": [path.with_suffix(".downstream.csv") for path in metrics],
    }


def score_precision(metrics_file: Path) -> str:
    """The precision an evaluation scored in, from the ``.provenance.json`` beside its metrics CSV (fp32 where the
    record predates the setting or is absent)."""
    provenance = Path(metrics_file).with_suffix(".provenance.json")
    if not provenance.exists():
        return "fp32"
    execution = json.loads(provenance.read_text()).get("execution", {})
    return execution.get("score_precision", execution.get("precision", "fp32"))  # an API evaluation names both


def score_precisions(metric_files) -> str:
    """The one precision every evaluation of a collection scored in; a one-line error naming two files that
    differ, since runs scored in different precisions are never compared (docs/precision.md)."""
    first = {}
    for path in metric_files:
        precision = score_precision(path)
        first.setdefault(precision, path)
        if len(first) > 1:
            (a, file_a), (b, file_b) = list(first.items())[:2]
            raise ValueError(
                f"{file_b}: scored in {b} but {file_a} in {a}; runs scored in different precisions are not compared: "
                "re-evaluate them with one scoring precision (config key precision: {edit: ..., score: ...})"
            )
    return next(iter(first), "fp32")


def verify_collected(results: Path) -> None:
    """Fail with a one-line error naming the file and the fix when a collected CSV differs from what
    ``collect`` wrote (corrupted or edited since). The paper_outputs rule calls it before reading them."""
    results = Path(results)
    try:
        checksums = json.loads((results / CHECKSUMS).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{results / CHECKSUMS}: unreadable ({type(error).__name__}); {_RECOLLECT}") from None
    optional = tuple(name for name in OPTIONAL_COLLECTED if name in checksums or (results / name).exists())
    for name in COLLECTED + optional:
        path = results / name
        if not path.is_file():
            raise ValueError(f"{path}: missing; {_RECOLLECT}")
        if file_sha256(path) != checksums.get(name):
            raise ValueError(f"{path}: checksum differs from {CHECKSUMS} (corrupted or edited); {_RECOLLECT}")


_RECOLLECT = "delete it and rerun snakemake to collect the results again"


# The rows of one snapshot (metrics, records, downstream records, norms) or one edit (ledger) of a run.
UNIT = {"ledger.csv": "position"}  # every other data file: "edits"
RUN = ["method", "variant", "order"]


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's run as "method/variant"."""
    return frame["method"].astype(str) + "/" + frame["variant"].astype(str)


def _csv_options(name: str) -> dict:
    """records.csv keeps 12 significant digits, as each evaluation wrote them (encore.evaluation.rows)."""
    return {"float_format": "%.12g"} if name == "records.csv" else {}


def set_aside(published: Path, aside: Path, runs) -> list[str]:
    """Move every row of ``runs`` ("method/variant") out of the data files in ``published`` into the same files in
    ``aside``: the published data of runs made again on another CPU are kept beside the new ones, never deleted. A
    run is set aside once (its row in ``aside``'s runs.csv, written last, says it is); later calls leave the new
    making's published rows alone. Returns one line per run set aside."""
    from encore.reporting.data_files import data_path, write_data_file

    published, aside = Path(published), Path(aside)
    marker = data_path(aside, "runs.csv")
    done = set(run_labels(pd.read_csv(marker))) if marker.exists() else set()
    moving_runs = [run for run in runs if run not in done]
    if not moving_runs:
        return []
    aside.mkdir(parents=True, exist_ok=True)
    moved = set()
    for name in (*(n for n in COLLECTED + OPTIONAL_COLLECTED if n != "runs.csv"), "runs.csv"):  # runs.csv last
        source = data_path(published, name)
        if not source.exists():
            continue
        frame = pd.read_csv(source)
        moving = run_labels(frame).isin(moving_runs)
        if not moving.any():
            continue
        target = data_path(aside, name)
        before = pd.read_csv(target) if target.exists() else None
        there = set(run_labels(before)) if before is not None else set()  # a call cut short: not twice
        options = _csv_options(name)
        for directory, rows in ((aside, [before, frame[moving & ~run_labels(frame).isin(list(there))]]),
                                (published, [frame[~moving]])):  # fmt: skip
            temporary = directory / f".{name}"
            pd.concat([f for f in rows if f is not None], ignore_index=True).to_csv(temporary, index=False, **options)
            write_data_file(temporary, directory, name)
            temporary.unlink()
        moved |= set(run_labels(frame[moving]))
    return [f"{run}: its published data set aside in {aside}" for run in sorted(moved)]


def complete_from_published(collected: Path, published: Path, out_dir: Path, keep=()) -> list[str]:
    """``out_dir``: the collection ``collected`` plus every snapshot (or ledger row) of ``published`` that it lacks,
    with checksums. A study directory that was lost and started again holds only what it has recomputed (it does
    not redo published evaluations): publishing it alone would drop every result made before. runs.csv keeps, per
    run, the row that reached more edits; every run of both must come from one commit (runs.csv ``code``), else a
    one-line error. The snapshots both hold are not compared here (tools/study.py checks their ledgers). Returns one
    line per run completed from ``published``. For the runs in ``keep`` ("method/variant": their published
    snapshots recomputed on another CPU only as the base of a continuation) the published rows win wherever both
    hold a snapshot or an edit."""
    from encore.reporting.data_files import data_path

    collected, published, out_dir = Path(collected), Path(published), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {name: _read(data_path(directory, "runs.csv")) for name, directory in (("ours", collected), ("theirs", published))}  # fmt: skip
    commits = {
        json.loads(code).get("git_commit") for frame in runs.values() if frame is not None for code in frame["code"]
    }
    if len(commits) > 1:
        raise ValueError(f"{published / 'runs.csv'}: made by commit(s) {sorted(map(str, commits))}, not one; a study "
                         "is completed only from what its own commit published")  # fmt: skip
    lines = []
    for name in COLLECTED + OPTIONAL_COLLECTED:
        ours, theirs = _read(collected / name), _read(data_path(published, name))
        if ours is None and theirs is None:
            continue
        if name == "runs.csv":
            both = pd.concat([ours, theirs], ignore_index=True)  # ours first: kept on a tie
            merged = both.loc[both.groupby(RUN, sort=False)["edits"].idxmax()]
        else:
            unit = [*RUN, UNIT.get(name, "edits")]
            if ours is not None and theirs is not None and keep:  # theirs first where both hold a kept run's unit
                mine = run_labels(ours).isin(list(keep))
                held = set(map(tuple, theirs[unit].astype(str).values))
                both = pd.Series([tuple(row) in held for row in ours[unit].astype(str).values], index=ours.index)
                ours = ours[~(mine & both)]
            have = set(map(tuple, ours[unit].astype(str).values)) if ours is not None else set()
            kept = (
                theirs[[tuple(row) not in have for row in theirs[unit].astype(str).values]]
                if theirs is not None
                else None
            )
            merged = pd.concat([frame for frame in (ours, kept) if frame is not None], ignore_index=True)
            if kept is not None and name == "metrics.csv":
                for run, rows in kept.groupby(RUN):
                    lines.append(f"{'/'.join(map(str, run))}: {rows['edits'].nunique()} evaluation(s) as published")
        merged = merged.sort_values([c for c in [*RUN, UNIT.get(name, "edits")] if c in merged], kind="stable")
        merged.to_csv(out_dir / name, index=False, **_csv_options(name))
    names = [name for name in COLLECTED + OPTIONAL_COLLECTED if (out_dir / name).exists()]
    (out_dir / CHECKSUMS).write_text(json.dumps({n: file_sha256(out_dir / n) for n in names}, indent=1) + "\n")
    return lines


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if Path(path).exists() else None
