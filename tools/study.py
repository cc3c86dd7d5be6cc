"""A study longer than any session: its own checkout of one pinned commit, its own venv, lanes that resume.

    make study STUDY=lifelong-cpu STUDY_DIR=/work/studies/lifelong-cpu          # first use: pin, check out, set up,
                                                                                  # start; later: resume
    make study-status STUDY_DIR=...                                               # where every run stands
    make study-collect STUDY_DIR=...                                              # CSVs + pages into docs/results/
    python tools/study.py pause|resume|stop --dir DIR                             # SIGSTOP / SIGCONT / SIGTERM

A study is a file in configs/studies/ (the experiment config, the lanes, where it is published). On first use
``start`` pins a commit (``--commit``, default HEAD of this checkout), clones it into ``DIR/checkout`` and installs
its venv there from its locks; every later ``start`` checks that the checkout still is that commit, so changes to
the main checkout never touch a running study. The runner (a background process group, logging to ``DIR/logs``)
computes the statistics (both cores), then runs the lanes side by side, one thread per job: each lane runs its runs
in order, one Snakemake call per snapshot (its edits, then its evaluation, before the next snapshot's edits). The
runner is this file, run by the study's python; only the jobs run the pinned code. Run ``start`` again after any
interruption: Snakemake redoes only the incomplete segment and skips what is done. ``collect`` gathers every
complete snapshot and evaluation (``encore.reporting.collect.completed_results``) with the study's code, checks the
snapshots the published data also hold against them (the runs are deterministic: a study started again must
reproduce what was committed), then publishes with this checkout's reporting code and writes progress.md.

One self-contained file on purpose (past the usual ~400 lines): the runner runs under the study's python, whose
``encore`` is the pinned one, so it imports only the standard library and yaml, never this checkout's package.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from statistics import fmean

import yaml

REPO = Path(__file__).resolve().parents[1]
STATE = "study.json"
RESTARTED = "progress-before-restart.csv"  # in the published directory: the progress.csv of a lost study directory
REPRODUCIBILITY = "reproducibility.csv"  # in the published directory: recomputed snapshots against the published
SIGNALS = "signals.log"  # in DIR/logs: every pause, resume and stop, stamped
TIMING_COLUMNS = ("targets_s", "keys_s", "solve_s", "efficacy_s")


class StudyError(RuntimeError):
    pass


def entry(item) -> dict:
    """A lane item: ``method/variant`` (or ``unedited``), or ``{run: method/variant, to: N}``, which continues a run
    that reached the experiment's num_edits on to N edits (new snapshots only: the finished ones are kept as they
    are, with ``--rerun-triggers mtime``, since the changed num_edits would otherwise redo them)."""
    if isinstance(item, str):
        return {"label": item, "run": item, "to": None}
    return {"label": f"{item['run']} to {item['to']:,}", "run": item["run"], "to": int(item["to"])}


# ---------------------------------------------------------------------------------------------------- the study
class Study:
    """A study directory: its pinned commit, checkout, venv, plan (lanes) and results."""

    def __init__(self, directory: Path):
        self.dir = Path(directory).resolve()
        self.state_file = self.dir / STATE
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    @property
    def checkout(self) -> Path:
        return self.dir / "checkout"

    @property
    def python(self) -> Path:
        return self.checkout / ".venv" / "bin" / "python"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def plan(self) -> dict:
        """The study file (as pinned: read from the study's checkout), with its experiment config merged over
        config.yaml (the keys the runner needs)."""
        plan = yaml.safe_load((self.checkout / self.state["study_file"]).read_text())
        config = yaml.safe_load((self.checkout / "config.yaml").read_text())
        config.update(yaml.safe_load((self.checkout / plan["config"]).read_text()))
        return {**plan, "experiment": config}

    @property
    def results(self) -> Path:
        return self.checkout / "results" / self.plan()["experiment"]["experiment"]

    def entries(self) -> list[list[dict]]:
        return [[entry(item) for item in lane] for lane in self.plan()["lanes"]]

    def assigned_entries(self) -> list[list[dict]]:
        """The lanes as the runner last assigned them (lanes.json: a lane that ran out took runs from another), else
        as the study file plans them."""
        planned = self.entries()
        items = {item["label"]: item for lane in planned for item in lane}
        lanes_file = self.dir / "lanes.json"
        if not lanes_file.exists():
            return planned
        assigned = [
            lane["runs"] for _, lane in sorted(json.loads(lanes_file.read_text()).items(), key=lambda x: int(x[0]))
        ]
        if len(assigned) != len(planned) or sorted(label for lane in assigned for label in lane) != sorted(items):
            return planned  # written for another plan
        return [[items[label] for label in lane] for lane in assigned]

    def snakemake_args(self, cores: int, to: int | None = None) -> list[str]:
        plan = self.plan()
        overrides = [f"resources={self.dir / 'resources'}"]
        if self.state.get("data_dir"):
            overrides.append(f"data_dir={self.state['data_dir']}")
        extension = []
        if to is not None:
            overrides.append(f"num_edits={to}")
            extension = ["--rerun-triggers", "mtime"]
        return [str(self.checkout / ".venv" / "bin" / "snakemake"), "--nolock", "--cores", str(cores), *extension,
                "--configfile", plan["config"], "--config", *overrides, "--"]  # fmt: skip

    def num_edits(self, item: dict) -> int:
        return item["to"] or self.plan()["experiment"]["num_edits"]

    def orders(self) -> list[str]:
        orders = self.plan()["experiment"]["order_sample"]
        return orders if isinstance(orders, list) else [orders]

    @functools.cache  # noqa: B019 (one Study per command)
    def snapshot_edits(self, num_edits: int | None = None) -> list[int]:
        """The snapshot edit counts of a run to ``num_edits`` (default: the experiment's), from the study's own code
        (encore.experiment.snapshot_edits)."""
        config = {**self.plan()["experiment"], **({"num_edits": num_edits} if num_edits else {})}
        code = ("import json, sys; from encore.experiment import snapshot_edits; "
                "print(json.dumps(snapshot_edits(*map(int, sys.argv[1:]))))")  # fmt: skip
        arguments = [str(config[key]) for key in ("num_edits", "batch_size", "snapshot_every")]
        output = subprocess.run([str(self.python), "-c", code, *arguments], capture_output=True, text=True,
                                check=True, cwd=self.checkout).stdout  # fmt: skip
        return json.loads(output)

    def evaluations(self, item: dict) -> list[tuple[int, int]]:
        """(order, edits) of every evaluation of a lane item (its new snapshots only, for a continuation)."""
        if item["run"] == "unedited":
            return [(order, 0) for order in self.orders()]
        start = self.plan()["experiment"]["num_edits"] if item["to"] else 0
        return [(order, edits) for order in self.orders() for edits in self.snapshot_edits(self.num_edits(item))
                if edits > start]  # fmt: skip

    def published(self) -> set[tuple[str, str, int]]:
        """(run, order (as text), edits) of the evaluations of every lane item that the study's published directory
        (in this checkout) holds whole, when every run published there was made by the study's pinned commit
        (runs.csv); else nothing. A study directory started again does not redo them. A run published only in part is
        made again whole: the same commit on another CPU need not reproduce its snapshots bit for bit (bf16 kernels
        differ), and one run's snapshots must come from one trajectory."""
        data = REPO / self.plan()["publish"] / "data"
        runs, metrics = read_published(data, "runs.csv"), read_published(data, "metrics.csv")
        commits = {json.loads(row["code"]).get("git_commit") for row in runs}
        if not runs or commits != {self.state["commit"]}:
            return set()
        held = {(row["method"] if row["method"] == "unedited" else f"{row['method']}/{row['variant']}",
                 str(row["order"]), int(row["edits"])) for row in metrics}  # fmt: skip
        whole = set()
        for item in (item for lane in self.entries() for item in lane):
            evaluations = {(item["run"], str(order), edits) for order, edits in self.evaluations(item)}
            whole |= evaluations if evaluations <= held else set()
        return whole

    def targets(self, item: dict, published: set | None = None) -> list[str]:
        """The evaluations of a lane item still to make, the ``published`` ones left out: Snakemake makes the
        snapshots they need (a study directory that was lost recomputes a published snapshot only where a later
        evaluation needs it: a continuation's base)."""
        results = Path("results") / self.plan()["experiment"]["experiment"]
        published = published or set()
        return [str(results / "unedited" / f"order{order}" / "metrics.csv") if item["run"] == "unedited"
                else str(results / item["run"] / f"order{order}" / "metrics" / f"edits_{edits:05d}.csv")
                for order, edits in self.evaluations(item) if (item["run"], str(order), edits) not in published]  # fmt: skip

    def statistics_targets(self) -> list[str]:
        results = Path("results") / self.plan()["experiment"]["experiment"]
        runs = [item["run"] for lane in self.entries() for item in lane]
        methods = sorted({run.split("/")[0] for run in runs if run != "unedited"})
        return [str(results / "statistics" / f"{method}.json") for method in methods]


def read_published(data: Path, name: str) -> list[dict]:
    """The rows of a published CSV (``name``, or ``name``.gz when it was large), [] when there is none."""
    for path in (data / name, data / f"{name}.gz"):
        if path.exists():
            with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as handle:
                return list(csv.DictReader(handle))
    return []


# ------------------------------------------------------------------------------------------------- set-up, pin
def run_command(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise StudyError(f"{' '.join(map(str, command))} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout.strip()


def prepare(study: Study, study_file: str, commit: str | None, data_dir: str | None) -> None:
    """Pin (first use), check out and set up the study's own copy of the code; refuse another commit later."""
    wanted = run_command(["git", "rev-parse", commit or "HEAD"], cwd=REPO)
    if study.state is None:
        study.dir.mkdir(parents=True, exist_ok=True)
        study.state = {"study_file": study_file, "commit": wanted, "data_dir": data_dir,
                       "created": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
        study.state_file.write_text(json.dumps(study.state, indent=1) + "\n")
        print(f"study {study.dir}: pinned commit {wanted}")
    elif commit is not None and wanted != study.state["commit"]:
        raise StudyError(f"{study.state_file}: pinned to {study.state['commit']}, not {wanted}; "
                         "a study runs one commit (start a new study directory for another)")  # fmt: skip
    elif study.state["study_file"] != study_file:
        raise StudyError(f"{study.state_file}: runs {study.state['study_file']}, not {study_file}")
    pinned = study.state["commit"]
    if not (study.checkout / ".git").exists():
        run_command(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(study.checkout)])
        run_command(["git", "checkout", "--quiet", pinned], cwd=study.checkout)
    head = run_command(["git", "rev-parse", "HEAD"], cwd=study.checkout)
    if head != pinned:
        raise StudyError(f"{study.checkout}: at {head}, but the study is pinned to {pinned}; restore it with "
                         f"git -C {study.checkout} checkout {pinned}")  # fmt: skip
    if not (study.checkout / ".venv" / ".installed").exists():
        print(f"setting up {study.checkout}/.venv from its locks")
        run_command(["make", "-C", str(study.checkout), "setup"])


# ------------------------------------------------------------------------------------------------- the runner
def runner_pid(study: Study) -> int | None:
    """PID of the study's runner (the leader of its process group) when it is alive."""
    path = study.dir / "runner.pid"
    if not path.exists():
        return None
    pid = int(path.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def start(study: Study) -> None:
    pid = runner_pid(study)
    if pid is not None:
        print(f"the study's runner is already running (process group {pid}); `status` says where it stands")
        return
    study.logs.mkdir(parents=True, exist_ok=True)
    # The runner is this checkout's tools/study.py, run by the study's python: it only orders the Snakemake calls; every
    # job runs the pinned code of the study's checkout (its Snakefile, its encore, its venv).
    runner = Path(__file__).resolve()
    with open(study.logs / "runner.log", "a") as log:
        process = subprocess.Popen([str(study.python), str(runner), "_run", "--dir", str(study.dir)],
                                   cwd=study.checkout, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    (study.dir / "runner.pid").write_text(f"{process.pid}\n")
    print(f"started the runner (process group {process.pid}); logs in {study.logs}")


def stamp(text: str) -> str:
    return f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} {text}"


def next_run(lanes: dict, index: str, items: dict) -> str | None:
    """The next run of lane ``index`` (taken off its queue): the first of its own queue; once that is empty, a run
    still queued in another lane (the longest queue first, its last run first), moved to this lane, so that no lane
    idles while another has runs waiting. A continuation ("to") is taken only once the run it continues is done.
    None when nothing is left that this lane may start."""
    own = lanes[index]["queue"]
    if own:
        return own.pop(0)
    done = {label for lane in lanes.values() for label in lane["done"]}
    for other in sorted(lanes, key=lambda i: len(lanes[i]["queue"]), reverse=True):
        for label in reversed(lanes[other]["queue"]):
            if items[label]["to"] is None or items[label]["run"] in done:
                lanes[other]["queue"].remove(label)
                lanes[other]["runs"].remove(label)
                lanes[index]["runs"].append(label)
                return label
    return None


def run_lanes(study: Study) -> None:
    """The runner: statistics on both cores, then every lane in its own thread (one Snakemake call per snapshot); a
    lane whose own runs are done takes waiting runs from the other (``next_run``)."""
    print(stamp(f"runner {os.getpid()} at commit {study.state['commit']}"), flush=True)
    lanes_file = study.dir / "lanes.json"
    lanes = {str(i): {"runs": [item["label"] for item in lane], "queue": [item["label"] for item in lane],
                      "current": None, "done": [], "failed": []}
             for i, lane in enumerate(study.entries())}  # fmt: skip
    planned = {index: list(state["runs"]) for index, state in lanes.items()}
    items = {item["label"]: item for lane in study.entries() for item in lane}
    lock = threading.Lock()

    def save():
        with lock:
            lanes_file.write_text(json.dumps(lanes, indent=1) + "\n")

    save()
    with open(study.logs / "statistics.log", "a") as log:
        code = subprocess.call([*study.snakemake_args(2), *study.statistics_targets()], cwd=study.checkout,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    if code:
        print(stamp(f"statistics failed (exit {code}); see {study.logs / 'statistics.log'}"), flush=True)
        return

    def lane(index: str) -> None:
        state = lanes[index]
        while True:
            with lock:
                run = next_run(lanes, index, items)
                moved = run is not None and run not in planned[index]
                state["current"] = run
            save()
            if run is None:
                break
            print(stamp(f"lane {index}: {run} starts" + (" (taken from another lane)" if moved else "")), flush=True)
            with open(study.logs / f"lane-{index}.log", "a") as log:
                log.write(stamp(f"{run}\n"))
                log.flush()
                item = items[run]
                code = 0
                # one snapshot at a time, its evaluation before the next edits; published evaluations are not redone
                for target in study.targets(item, study.published()):
                    code = subprocess.call([*study.snakemake_args(1, item["to"]), target], cwd=study.checkout,
                                           stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
                    if code:
                        break
            with lock:
                (state["done"] if code == 0 else state["failed"]).append(run)
            print(stamp(f"lane {index}: {run} {'done' if code == 0 else f'failed (exit {code})'}"), flush=True)

    threads = [threading.Thread(target=lane, args=(index,)) for index in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(stamp("every lane has finished"), flush=True)


def signal_runner(study: Study, which: signal.Signals) -> None:
    pid = runner_pid(study)
    if pid is None:
        print("no runner is running")
        return
    os.killpg(pid, which)
    study.logs.mkdir(parents=True, exist_ok=True)
    with open(study.logs / SIGNALS, "a") as log:  # the jobs' wall times (ledger, benchmarks) include every pause
        log.write(stamp(which.name) + "\n")
    print(f"sent {which.name} to the study's process group {pid}")


def paused(study: Study) -> tuple[int, float]:
    """How often and how many seconds in all the runner was paused (SIGSTOP to SIGCONT, logs/signals.log); a pause
    not yet resumed counts up to now."""
    path, count, seconds, since = study.logs / SIGNALS, 0, 0.0, None
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        when = datetime.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
        if line.endswith("SIGSTOP") and since is None:
            count, since = count + 1, when
        elif line.endswith(("SIGCONT", "SIGTERM")) and since is not None:
            seconds, since = seconds + (when - since).total_seconds(), None
    if since is not None:
        seconds += (datetime.datetime.now() - since).total_seconds()
    return count, seconds


# ------------------------------------------------------------------------------------------------- status
def read_tsv_seconds(path: Path) -> float | None:
    """Wall seconds of a job from its Snakemake benchmark file."""
    try:
        lines = path.read_text().splitlines()
        return float(lines[1].split("\t")[0])
    except (OSError, IndexError, ValueError):
        return None


def run_status(study: Study, item: dict, published: set | None = None) -> dict:
    """What one lane item has done, from the files it wrote and the evaluations ``published`` (default: the study's
    ``published()``; a study directory started again does not redo them): edits reached, snapshots evaluated, its
    measured rates and job seconds so far, and what is left: the edits up to the last snapshot still to evaluate
    (from the last snapshot this directory holds) and those snapshots. A continuation counts only its own
    snapshots' rates and seconds. The time left is estimated from these in ``status_rows``."""
    published = study.published() if published is None else published
    experiment = study.plan()["experiment"]
    bench = study.checkout / "benchmarks" / experiment["experiment"]
    results, run = study.results, item["run"]
    if run == "unedited":
        done = sum((results / "unedited" / f"order{o}" / "metrics.csv").exists() or ("unedited", str(o), 0) in published
                   for o in study.orders())  # fmt: skip
        seconds = [read_tsv_seconds(bench / "unedited" / f"order{o}" / "evaluate.tsv") for o in study.orders()]
        return {"label": item["label"], "edits": 0, "of": 0, "evaluated": done, "snapshots": len(study.orders()),
                "job_seconds": sum(s for s in seconds if s), "edits_left": 0,
                "evaluations_left": len(study.orders()) - done, "ends_left": []}  # fmt: skip
    start = experiment["num_edits"] if item["to"] else 0
    every_end = study.snapshot_edits(study.num_edits(item))
    ends = [end for end in every_end if end > start]
    # a continuation makes the edits up to ``start`` only if the run it continues will not (its evaluations are done)
    base_left = bool(start) and run_status(study, {**item, "to": None}, published)["evaluations_left"] > 0
    reached = evaluated = edits_left = 0
    edit_seconds, eval_seconds = [], []  # (edits in the segment, job seconds); job seconds
    eval_by_end: dict[int, list[float]] = {}  # measured evaluations by snapshot (the last scores every fact)
    ends_left = []  # the snapshots not evaluated yet, one per order
    for order in study.orders():
        base, previous = results / run / f"order{order}", 0
        here = 0  # the last snapshot this directory holds
        for end in every_end:
            if (base / "snapshots" / f"edits_{end:05d}" / "manifest.json").exists():
                here = end
                if end > start:
                    seconds = read_tsv_seconds(bench / run / f"order{order}" / f"edit_{end:05d}.tsv")
                    edit_seconds.append((end - previous, seconds))
            previous = end
        for end in ends:
            if (base / "metrics" / f"edits_{end:05d}.csv").exists():
                evaluated += 1
                seconds = read_tsv_seconds(bench / run / f"order{order}" / f"evaluate_{end:05d}.tsv")
                eval_seconds.append(seconds)
                if seconds:
                    eval_by_end.setdefault(end, []).append(seconds)
            elif (run, str(order), end) in published:
                evaluated += 1
            else:
                ends_left.append(end)
        needed = max([end for end in ends if end in ends_left], default=0)
        edits_left += max(0, needed - max(here, start if base_left else 0))
        reached += max([here, *(end for end in every_end if (run, str(order), end) in published)])
    measured = [(n, s) for n, s in edit_seconds if s]
    per_edit = sum(s for _, s in measured) / sum(n for n, _ in measured) if measured else None
    evals = [s for s in eval_seconds if s]
    per_eval = sum(evals) / len(evals) if evals else None
    return {"label": item["label"], "edits": reached, "of": study.num_edits(item) * len(study.orders()),
            "evaluated": evaluated, "snapshots": len(ends) * len(study.orders()),
            "s_per_edit": per_edit, "s_per_evaluation": per_eval,
            "job_seconds": sum(s for _, s in measured) + sum(evals),
            "edits_left": edits_left, "evaluations_left": len(ends_left),
            "evaluation_seconds_by_end": eval_by_end, "ends_left": ends_left}  # fmt: skip


def hours_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} h"


def status_rows(study: Study) -> list[dict]:
    """Every lane item, lane by lane, then each lane's total: edits, snapshots evaluated, rates, job hours so far and
    the estimated hours left. An item not started yet is estimated from the measured runs of its kind (with or
    without MPES), the unedited model from every measured evaluation; None where nothing of its kind is measured.
    An evaluation left takes what that snapshot took in every run that reached it (the last snapshot scores every
    edited fact and takes several times as long as the others), else the run's own mean (or its kind's)."""
    lanes, published = study.assigned_entries(), study.published()
    states = {item["label"]: run_status(study, item, published) for lane in lanes for item in lane}
    by_kind: dict[bool, list[dict]] = {}
    at_end: dict[int, list[float]] = {}
    for label, row in states.items():
        if row.get("s_per_edit") and row.get("s_per_evaluation"):
            by_kind.setdefault("mpes" in label, []).append(row)
        for end, seconds in row.get("evaluation_seconds_by_end", {}).items():
            at_end.setdefault(end, []).extend(seconds)

    def seconds_left(item: dict, row: dict) -> float | None:
        """Edits left x s/edit + each evaluation left at that snapshot's measured mean (else at s/evaluation); the
        rates are the run's own, else the mean of its kind's."""
        if row["edits_left"] == 0 and row["evaluations_left"] == 0:
            return 0.0
        if item["run"] == "unedited":  # one evaluation of each order, at the mean rate of every measured evaluation
            every_evaluation = [r["s_per_evaluation"] for like in by_kind.values() for r in like]
            return row["evaluations_left"] * fmean(every_evaluation) if every_evaluation else None
        like = by_kind.get("mpes" in item["label"], [])
        per_edit = row.get("s_per_edit") or (fmean([r["s_per_edit"] for r in like]) if like else None)
        per_eval = row.get("s_per_evaluation") or (fmean([r["s_per_evaluation"] for r in like]) if like else None)
        if per_edit is None or per_eval is None:
            return None
        at_snapshots = sum(fmean(at_end[end]) if end in at_end else per_eval for end in row["ends_left"])
        return row["edits_left"] * per_edit + at_snapshots

    rows = []
    for index, lane in enumerate(lanes):
        lane_left = 0.0
        for item in lane:
            label, row = item["label"], states[item["label"]]
            left = seconds_left(item, row)
            lane_left = None if left is None or lane_left is None else lane_left + left
            rows.append({"lane": index, "run": label, "edits": row["edits"] if item["run"] != "unedited" else None,
                         "of": row["of"] if item["run"] != "unedited" else None, "evaluated": row["evaluated"],
                         "snapshots": row["snapshots"], "s_per_edit": row.get("s_per_edit"),
                         "s_per_evaluation": row.get("s_per_evaluation"), "job_hours": row["job_seconds"] / 3600,
                         "left_hours": None if left is None else left / 3600})  # fmt: skip
        rows.append({"lane": index, "run": "lane total", "left_hours": None if lane_left is None else lane_left / 3600})
    totals = [row["left_hours"] for row in rows if row["run"] == "lane total"]
    items = [row["left_hours"] for row in rows if row["run"] != "lane total"]
    busy = None  # a lane that is done takes the other's waiting runs: the lanes end about together, or with the longest run
    if totals and None not in totals:
        busy = max(sum(totals) / len(totals), max((h for h in items if h is not None), default=0.0))
    rows.append({"lane": "all", "run": "study, both lanes busy", "left_hours": busy})
    return rows


def status_table(study: Study, rows: list[dict] | None = None) -> list[str]:
    """``status_rows`` as a Markdown table."""
    rows = status_rows(study) if rows is None else rows
    lines = ["| lane | run | edits | snapshots evaluated | s/edit (job) | s/evaluation | job time so far | left (est.) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        if row["run"] == "lane total":
            lines.append(f"| {row['lane']} | **lane total left** | | | | | | {hours_text(row['left_hours'])} |")
            continue
        if row["lane"] == "all":  # the lanes end about together (a lane that is done takes the other's runs)
            lines.append(f"| all | **the study, both lanes busy** | | | | | | {hours_text(row['left_hours'])} |")
            continue
        rate = f"{row['s_per_edit']:.2f}" if row.get("s_per_edit") else ""
        per_eval = f"{row['s_per_evaluation']:.0f}" if row.get("s_per_evaluation") else ""
        edits = f"{row['edits']:,} / {row['of']:,}" if row["edits"] is not None else ""
        lines.append(f"| {row['lane']} | {row['run']} | {edits} | {row['evaluated']} / {row['snapshots']} | {rate} | "
                     f"{per_eval} | {hours_text(row['job_hours'])} | {hours_text(row['left_hours'])} |")  # fmt: skip
    return lines


def status(study: Study) -> None:
    pid = runner_pid(study)
    print(
        f"study {study.dir}: {study.state['study_file']} at commit {study.state['commit'][:12]}; runner "
        + (f"running (process group {pid})" if pid else "not running (`start` resumes it)")
    )
    lanes = study.dir / "lanes.json"
    if lanes.exists():
        for index, lane in json.loads(lanes.read_text()).items():
            print(
                f"lane {index}: now {lane['current'] or '-'}; done {lane['done'] or '-'}; failed {lane['failed'] or '-'}"
            )
    print("\n".join(status_table(study)))
    count, seconds = paused(study)
    if count:
        print(f"paused {count} time(s), {seconds / 3600:.1f} h in all (logs/{SIGNALS}): the job times include it")


# ------------------------------------------------------------------------------------------------- collect
def collect(study: Study, out: Path | None) -> None:
    """Collect with the study's code, check against what is published, then publish with this checkout's code."""
    collected = study.dir / "collected"
    # the study's pinned code may predate encore.reporting.collect (split out of encore.reporting.report)
    code = ("import sys; from pathlib import Path\n"
            "try: from encore.reporting.collect import collect, completed_results\n"
            "except ImportError: from encore.reporting.report import collect, completed_results\n"
            "f = completed_results(Path(sys.argv[1])); "
            "collect(f['metrics'], f['norms'], f['ledgers'], f['manifests'], Path(sys.argv[2]), f['records'], "
            "f['downstream'])")  # fmt: skip
    run_command([str(study.python), "-c", code, str(study.results), str(collected)], cwd=study.checkout)
    out = Path(out or REPO / study.plan()["publish"])
    sys.path.insert(0, str(REPO))
    import pandas as pd

    from encore.reporting.collect import complete_from_published, set_aside
    from encore.reporting.cpu_reproducibility import FIRST_DIRECTORY
    from encore.reporting.cpu_reproducibility import write as write_cpu_reproducibility
    from encore.reporting.publish import publish

    # publishing settings are this checkout's (the pinned study file may predate them)
    settings = yaml.safe_load((REPO / study.state["study_file"]).read_text())
    recomputed = settings.get("recomputed") or {}  # runs recomputed on a CPU whose bf16 kernels round otherwise
    unknown = {how for how in recomputed.values()} - {"replace", "keep"}
    if unknown:
        raise StudyError(f"{study.state['study_file']}: recomputed: {sorted(unknown)}; each run is replace or keep")
    replaced = [run for run, how in recomputed.items() if how == "replace"]
    aside = out / FIRST_DIRECTORY / "data"  # the published data of the replaced runs, kept beside the new ones
    for line in set_aside(out / "data", aside, replaced):
        print(line)
    lines, differences = check_against_published(collected, out / "data", recomputed)
    lines = [line for line in lines if not line.startswith(tuple(f"{run}/" for run in replaced))]  # checked below
    differences = [row for row in differences if row["run"] not in replaced]
    if replaced and aside.exists():  # a replaced run is checked against its published data, set aside
        more, more_differences = check_against_published(collected, aside, recomputed)
        lines, differences = lines + more, differences + more_differences
    for line in lines:
        print(line)
    differences = [row for row in differences if row["run"] in recomputed]  # the others are equal or refused
    if differences:  # measured each time against the data made before: published (keep) or set aside (replace)
        pd.DataFrame(differences).to_csv(out / REPRODUCIBILITY, index=False, float_format="%.6g")
    # a study directory started again holds only what it recomputed: the rest comes from what was published
    merged = study.dir / "merged"
    keep = [run for run, how in recomputed.items() if how == "keep"]
    for line in complete_from_published(collected, out / "data", merged, keep=keep):
        print(line)
    reached = {item["label"]: run_status(study, item) for lane in study.entries() for item in lane}
    written = publish(merged, out)  # the default title, as --regenerate rebuilds it; progress.md says how far

    rows = status_rows(study)
    pd.DataFrame(rows).to_csv(out / "progress.csv", index=False, float_format="%.4g")  # the numbers of progress.md
    progress = ["# Progress of the study", "",
                f"Collected {datetime.datetime.now():%Y-%m-%d %H:%M} from `{study.state['study_file']}` at commit "
                f"`{study.state['commit']}` (every run of the study: one commit). Work in progress: each run's table "
                "rows stop at the snapshots it has reached. The numbers below are progress.csv's (job seconds from "
                "the Snakemake benchmark files of the jobs done; the lanes share 2 cores with other work, so they are "
                "not speed measurements).", "", *status_table(study, rows), ""]  # fmt: skip
    if (out / RESTARTED).exists():  # the job times of a lost study directory (status counts only this one's)
        progress += [f"A first study directory was lost; the job times of the runs it made are in `{RESTARTED}`. "
                     "The evaluations it published are not redone (counted above as evaluated, with no job time); "
                     "the snapshots that later evaluations need are recomputed and their ledgers checked against "
                     "the published ones.", ""]  # fmt: skip
    if recomputed and (out / REPRODUCIBILITY).exists():
        progress += [reproducibility_text(pd.read_csv(out / REPRODUCIBILITY), recomputed), ""]
    (out / "progress.md").write_text("\n".join(progress))
    if settings.get("precision_baseline"):  # the same runs edited in fp32: how bf16 editing compounds
        from encore.reporting.precision_compounding import write as write_compounding

        written += write_compounding(out, REPO / settings["precision_baseline"])
    written += write_cpu_reproducibility(out)  # the replaced runs' two makings, where there are any
    if settings.get("prediction_baseline"):  # the dated prediction's Result section (prediction-4600.md)
        from encore.reporting.prediction import write as write_prediction

        written += write_prediction(out, REPO / settings["prediction_baseline"])
    runs = ", ".join(f"{run} {row['edits']:,}" for run, row in reached.items() if run != "unedited")
    print(f"published {len(written)} files to {out}; edits reached: {runs}")


def reproducibility_text(differences, recomputed: dict) -> str:
    """The paragraph of progress.md on the runs recomputed on another CPU, from reproducibility.csv."""
    import pandas as pd

    parts = []
    for run, rows in differences.groupby("run", sort=False):
        rows = rows.set_index("column")
        differing = rows[rows["edits_differing"] > 0]
        compared = int(rows["edits_compared"].iloc[0])
        detail = ", ".join(f"{column} in {int(r.edits_differing):,}" + (f" (largest difference {r.largest_difference:.3g})"
                                                                          if pd.notna(r.largest_difference) else "")
                           for column, r in differing.iterrows())  # fmt: skip
        how = {"replace": "made again whole; its first data set aside", "keep": "recomputed as a continuation's base; "
               "its published snapshots kept"}.get(recomputed.get(run), "")  # fmt: skip
        parts.append(f"{run} ({how}): {compared:,} edits compared, " + (f"differing: {detail}" if detail else "equal"))
    return (
        "Recomputed on another CPU (the study file's `recomputed`; same commit, locks and seed; bf16 kernels that "
        f"round otherwise), the ledger against the published one ({REPRODUCIBILITY}): " + "; ".join(parts) + "."
    )


def check_against_published(collected: Path, published: Path, recomputed: dict | None = None) -> tuple[list, list]:
    """Compare every snapshot both hold, edit by edit: its ledger rows (timings aside) must be equal, since the runs
    are deterministic on one CPU. A run named in ``recomputed`` (the study file's key: recomputed on a CPU whose bf16
    kernels round otherwise, ``replace`` or ``keep``) may differ: its differences are measured, not refused. Returns
    one line per run compared, and the rows of reproducibility.csv: per run and ledger column, the edits compared,
    how many differ and the largest absolute difference (numeric columns)."""
    import pandas as pd

    from encore.reporting.data_files import data_path  # a large published CSV is ledger.csv.gz

    recomputed = recomputed or {}
    if not data_path(published, "ledger.csv").exists():
        return ["nothing published yet to check against"], []
    ours, theirs = pd.read_csv(collected / "ledger.csv"), pd.read_csv(data_path(published, "ledger.csv"))
    runs = ["method", "variant", "order"]
    precision = {  # edit precision per run; published before it was recorded: fp32
        name: {
            (r.method, r.variant): getattr(r, "edit_precision", "fp32")
            for r in pd.read_csv(d / "runs.csv").itertuples()
        }
        for name, d in (("ours", collected), ("theirs", published))
    }
    lines, differences = [], []
    for key, mine in ours.groupby(runs):
        other = theirs
        for column, value in zip(runs, key):
            other = other[other[column].astype(str) == str(value)]
        if precision["ours"].get(key[:2]) != precision["theirs"].get(key[:2]):
            continue  # made in another precision: not expected to be equal
        common = sorted(set(mine["position"]) & set(other["position"]))
        if not common:
            continue
        columns = [c for c in mine.columns if c in other.columns and c not in TIMING_COLUMNS]
        a = mine[mine["position"].isin(common)].sort_values("position")[columns].reset_index(drop=True)
        b = other[other["position"].isin(common)].sort_values("position")[columns].reset_index(drop=True)
        run = "/".join(map(str, key[:2]))
        for column in columns:
            differ = a[column].astype(str) != b[column].astype(str)
            numeric = all(pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x) for x in (a[column], b[column]))  # fmt: skip
            largest = float((a[column] - b[column]).abs().max()) if numeric and differ.any() else None
            differences.append({"run": run, "order": key[2], "edits_compared": len(common), "column": column,
                                "edits_differing": int(differ.sum()), "largest_difference": largest})  # fmt: skip
        equal = a.astype(str).equals(b.astype(str))
        lines.append(
            f"{'/'.join(map(str, key))}: {len(common)} edits recomputed; ledger "
            + ("equal to the published one" if equal else "DIFFERS from the published one")
            + (f" (recomputed on another CPU: {recomputed[run]})" if run in recomputed else "")
        )
        if not equal and run not in recomputed:
            raise StudyError(f"{'/'.join(map(str, key))}: the recomputed ledger differs from {published / 'ledger.csv'}"
                             "; the runs should be deterministic: find out why before publishing (a run recomputed "
                             "on another CPU: name it under `recomputed:` in the study file)")  # fmt: skip
    return lines, differences


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "status", "collect", "pause", "resume", "stop", "_run"])
    parser.add_argument("--dir", required=True, help="the study directory (outside the checkout)")
    parser.add_argument("--study", default="lifelong-cpu", help="configs/studies/<name>.yaml (first start only)")
    parser.add_argument("--commit", help="commit to pin at the first start (default: HEAD)")
    parser.add_argument("--data-dir", help="local copy of the data sets (default: $ENCORE_DATA_DIR)")
    parser.add_argument("--out", help="collect: the published directory (default: the study file's publish)")
    args = parser.parse_args(argv)
    study = Study(Path(args.dir))
    try:
        if args.command == "start":
            if REPO in study.dir.parents or study.dir == REPO:
                raise StudyError(f"--dir {study.dir}: inside the checkout; a study lives outside it")
            data_dir = args.data_dir or os.environ.get("ENCORE_DATA_DIR")
            prepare(study, f"configs/studies/{args.study}.yaml", args.commit,
                    str(Path(data_dir).resolve()) if data_dir else None)  # fmt: skip
            start(study)
            return
        if study.state is None:
            raise StudyError(f"{study.dir}: no study here (no {STATE}); `start` makes one")
        if args.command == "_run":
            run_lanes(study)
        elif args.command == "status":
            status(study)
        elif args.command == "collect":
            collect(study, Path(args.out) if args.out else None)
        else:
            signal_runner(
                study, {"pause": signal.SIGSTOP, "resume": signal.SIGCONT, "stop": signal.SIGTERM}[args.command]
            )
    except StudyError as error:
        raise SystemExit(f"study: {error}") from None


if __name__ == "__main__":
    main()
