"""What bf16-mixed costs in fidelity: the same facts edited sequentially in fp32 and in bf16-mixed, then scored.

    python -m encore.measuring.precision_fidelity --edits 300 --batch-size 100 --variant mpes_nc --out results/precision

Both chains start from the unedited model and edit the first ``--edits`` CounterFact requests of order 0 in
batches of ``--batch-size`` (same context templates, C0 and hyperparameters; encore.models.precision). Reported:

* the first batch (same weights in both chains): z and Delta relative to fp32, requests with equal stop
  iterations and reasons; over all batches: equal stop iterations (later batches start from different weights);
* ES / PS / NS / S on the edited facts: each chain scored in fp32 (what bf16 editing changes), and the bf16 chain
  scored in bf16 (the whole bf16-mixed pipeline), each against fp32 editing + fp32 scoring as the paired
  difference on the same facts with a 95% paired-bootstrap interval (encore.reporting.claims.intervals);
* scoring on the same weights (the fp32 chain's): per-prompt NLL difference of both answers between the two
  modes, and the prompts and records whose outcome flips (ES/PS/NS indicator of a prompt: NLL(new) < NLL(true)).

Writes ``fidelity.csv`` (one row per number) and ``records.csv`` (per fact and run) under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from encore.editing.editors import make_editor
from encore.editing.sequential import EditorState, edit_batch
from encore.evaluation.counterfact import answer_nll, counterfact_record_scores
from encore.measuring.benchmark import prepare
from encore.models.architecture import read_weight, write_weight
from encore.models.precision import PRECISIONS, check_precision, precision_scope
from encore.reporting.claims.intervals import harmonic_score, paired_bootstrap

RUNS = {  # name: (editing precision, scoring precision)
    "fp32": ("fp32", "fp32"),
    "bf16 edit, fp32 scoring": ("bf16-mixed", "fp32"),
    "bf16 edit, bf16 scoring": ("bf16-mixed", "bf16-mixed"),
    "fp32 edit, bf16 scoring": ("fp32", "bf16-mixed"),
}


def edit_chain(setting, precision: str, batch_size: int) -> dict:
    """Sequential editing of all records in ``precision`` from the current weights; returns the edited layers'
    weights, each batch's targets and the first batch's Delta; the weights are restored afterwards."""
    model, hparams, layers = setting.model, setting.hparams, sorted(setting.hparams.layers)
    original = {layer: read_weight(model, layer).clone() for layer in layers}
    state = EditorState.initial(setting.templates, layers, original[layers[0]].shape[1], device="cpu")
    batches, first_delta, started = [], None, time.perf_counter()
    with precision_scope(precision):
        for start in range(0, len(setting.records), batch_size):
            batch = setting.records[start : start + batch_size]
            result = edit_batch(model, setting.tokenizer, batch, hparams, make_editor(hparams), state,
                                setting.covariances, setting.projectors)  # fmt: skip
            batches.append(result["targets"])
            if first_delta is None:
                first_delta = torch.cat([(read_weight(model, layer) - original[layer]).flatten().double()
                                         for layer in layers])  # fmt: skip
            print(f"  {precision}: {state.edits_done} edits, {time.perf_counter() - started:.0f} s", flush=True)
    weights = {layer: read_weight(model, layer).clone() for layer in layers}
    for layer in layers:
        write_weight(model, layer, original[layer])
    return {"weights": weights, "batches": batches, "first_delta": first_delta,
            "seconds": time.perf_counter() - started}  # fmt: skip


def with_weights(setting, weights: dict, function):
    """``function()`` with the edited layers set to ``weights``, the unedited weights restored afterwards."""
    original = {layer: read_weight(setting.model, layer).clone() for layer in weights}
    for layer, weight in weights.items():
        write_weight(setting.model, layer, weight)
    try:
        return function()
    finally:
        for layer, weight in original.items():
            write_weight(setting.model, layer, weight)


def target_agreement(chains: dict) -> dict:
    """First batch: z (per request, max and median) and Delta relative to fp32, equal stops; all batches: equal stops."""
    reference, mixed = chains["fp32"]["batches"], chains["bf16-mixed"]["batches"]
    z = (mixed[0].z - reference[0].z).double().norm(dim=1) / reference[0].z.double().norm(dim=1)
    delta = chains["fp32"]["first_delta"]
    equal = [[a == b for a, b in zip(r.iterations, m.iterations)] for r, m in zip(reference, mixed)]
    return {
        "first batch: z relative difference, max": float(z.max()),
        "first batch: z relative difference, median": float(z.median()),
        "first batch: Delta relative difference": float((chains["bf16-mixed"]["first_delta"] - delta).norm() / delta.norm()),
        "first batch: equal stop iterations": sum(equal[0]),
        "first batch: equal stop reasons": sum(a == b for a, b in zip(reference[0].stop_reason, mixed[0].stop_reason)),
        "first batch: requests": len(equal[0]),
        "all batches: equal stop iterations": sum(map(sum, equal)),
        "all batches: requests": sum(map(len, equal)),
        "mean iterations, fp32": float(np.mean([i for r in reference for i in r.iterations])),
        "mean iterations, bf16-mixed": float(np.mean([i for m in mixed for i in m.iterations])),
    }  # fmt: skip


def metric_differences(scores: dict) -> list[dict]:
    """ES/PS/NS/S of every run and its paired difference to the fp32 run (percentage points, 95% interval)."""
    base = scores["fp32"]
    rows = []
    for name, frame in scores.items():
        columns = [frame[m].to_numpy() for m in ("es", "ps", "ns")] + [base[m].to_numpy() for m in ("es", "ps", "ns")]
        for index, metric in enumerate(("ES", "PS", "NS")):
            level = paired_bootstrap(lambda x: 100 * x.mean(axis=1), columns[index])
            rows.append({"run": name, "metric": metric, "value": level.estimate})
            if name != "fp32":
                diff = paired_bootstrap(lambda x, y: 100 * (x - y).mean(axis=1), columns[index], columns[index + 3])
                rows.append({"run": name, "metric": f"{metric} - fp32", "value": diff.estimate, "low": diff.low,
                             "high": diff.high})  # fmt: skip
        s = paired_bootstrap(lambda *c: harmonic_score(*c[:3]), *columns[:3])
        rows.append({"run": name, "metric": "S", "value": s.estimate})
        if name != "fp32":
            diff = paired_bootstrap(lambda *c: harmonic_score(*c[:3]) - harmonic_score(*c[3:]), *columns)
            rows.append({"run": name, "metric": "S - fp32", "value": diff.estimate, "low": diff.low, "high": diff.high})
    return rows


def scoring_agreement(setting, weights: dict) -> dict:
    """Per-prompt NLLs of both answers on the same weights in fp32 and bf16-mixed: differences and flips."""
    prompts, kinds, owners = [], [], []
    for number, record in enumerate(setting.records):
        for kind, group in (("rewrite", [record.rewrite_prompt]), ("paraphrase", record.paraphrase_prompts),
                            ("neighborhood", record.neighborhood_prompts)):  # fmt: skip
            prompts += group
            kinds += [kind] * len(group)
            owners += [number] * len(group)
    answers_new = [setting.records[i].target_new for i in owners]
    answers_true = [setting.records[i].target_true for i in owners]
    nll = {}
    for precision in PRECISIONS:
        with precision_scope(precision):
            nll[precision] = with_weights(setting, weights, lambda: (
                answer_nll(setting.model, setting.tokenizer, prompts + prompts, answers_new + answers_true)
            ).double().numpy())  # fmt: skip
    n = len(prompts)
    difference = np.abs(nll["bf16-mixed"] - nll["fp32"])
    outcome = {p: nll[p][:n] < nll[p][n:] for p in PRECISIONS}  # NLL(new) < NLL(true)
    flips = outcome["bf16-mixed"] != outcome["fp32"]
    kinds = np.array(kinds)
    row = {
        "scoring: prompts": n,
        "scoring: |NLL difference| mean": float(difference.mean()),
        "scoring: |NLL difference| 99th percentile": float(np.percentile(difference, 99)),
        "scoring: |NLL difference| max": float(difference.max()),
        "scoring: mean NLL, fp32": float(nll["fp32"].mean()),
        "scoring: prompts whose outcome flips": int(flips.sum()),
        "scoring: records with a flip": len({owners[i] for i in np.flatnonzero(flips)}),
    }
    for kind in ("rewrite", "paraphrase", "neighborhood"):
        row[f"scoring: flips, {kind} prompts"] = f"{int(flips[kinds == kind].sum())} of {int((kinds == kind).sum())}"
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="memit")
    parser.add_argument("--variant", default="mpes_nc", help="plain | mpes | nc | mpes_nc (ENCORE for MEMIT)")
    parser.add_argument("--edits", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--resources", default="resources")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (solves on the CPU)")
    parser.add_argument("--out", default="results/precision", help="folder for fidelity.csv and records.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    setting = prepare(args)
    check_precision("bf16-mixed", setting.device, "float32")
    chains = {precision: edit_chain(setting, precision, args.batch_size) for precision in PRECISIONS}
    scores = {}
    for name, (edited, scored) in RUNS.items():
        with precision_scope(scored):
            scores[name] = with_weights(setting, chains[edited]["weights"],
                                        lambda: counterfact_record_scores(setting.model, setting.tokenizer,
                                                                          setting.records))  # fmt: skip
    summary = {
        "edits": len(setting.records),
        "batch size": args.batch_size,
        "editing seconds, fp32": chains["fp32"]["seconds"],
        "editing seconds, bf16-mixed": chains["bf16-mixed"]["seconds"],
        **target_agreement(chains),
        **scoring_agreement(setting, chains["fp32"]["weights"]),
    }
    metrics = metric_differences(scores)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"run": "", "metric": key, "value": value} for key, value in summary.items()] + metrics
    pd.DataFrame(rows, columns=["run", "metric", "value", "low", "high"]).to_csv(out / "fidelity.csv", index=False)
    pd.concat([frame.assign(run=name) for name, frame in scores.items()]).to_csv(out / "records.csv", index=False)
    print(f"\n{args.method}/{args.variant}, {len(setting.records)} edits in batches of {args.batch_size}:")
    for key, value in summary.items():
        print(f"  {key}: {value:.3g}" if isinstance(value, float) else f"  {key}: {value}")
    for row in metrics:
        interval = f" [{row['low']:.1f}, {row['high']:.1f}]" if "low" in row else ""
        print(f"  {row['run']:<26} {row['metric']:<10} {row['value']:6.1f}{interval}")
    print(f"written: {out / 'fidelity.csv'}, {out / 'records.csv'} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    from encore.cli import run

    run(main)
