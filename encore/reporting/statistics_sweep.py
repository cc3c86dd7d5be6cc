"""The covariance-statistics N-sweep's page and figure, from its published CSVs alone (docs/statistics.md).

tools/statistics_sweep.py runs the sweep and writes ``sweep.csv`` (tidy: n, run, layer, quantity, value, low, high,
note), ``timings.csv`` and ``protocol.csv``; ``render`` draws the figure (C0 and AlphaEdit's projector against N;
S and NS differences to the reference N with paired 95% intervals) and writes results.md, every number read from
those CSVs. ``python -m encore.reporting.statistics_sweep docs/results/statistics-sweep`` regenerates both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from encore.reporting.data_files import data_path

RUNS = {"plain": "MEMIT", "mpes_nc": "ENCORE"}  # variant -> run name
FIGURE = "statistics_sweep.png"
SCORES, DIFFERENCES = ("ES", "PS", "NS", "S"), ("S", "NS")
# Which N to choose (fixed 2026-12-07, before the reference N's runs had finished; docs/statistics.md): the smallest N
# below the reference at which, and at every larger N below it, both runs lose less than MARGIN points of S and of NS
# against the reference: the lower end of each paired 95% interval of S_N - S_ref and NS_N - NS_ref is above -MARGIN.
MARGIN = 1.0  # points (ours: one point of S or NS)


def supported_n(sweep: pd.DataFrame) -> tuple[int | None, dict[int, str]]:
    """The N the sweep supports by the rule above (the reference N itself when no smaller N passes; None while the
    reference or an N's differences are missing), and per N below the reference why it passes or fails."""
    ns = sorted(int(n) for n in sweep["n"].unique())
    reference = ns[-1]
    verdicts: dict[int, str] = {}
    for n in ns[:-1]:
        lows = {}  # (run, metric) -> the lower end of its paired interval, None where missing
        for run in RUNS.values():
            for metric in DIFFERENCES:
                part = select(sweep, run, f"{metric}_diff").query("n == @n")
                lows[run, metric] = None if part.empty or pd.isna(part["low"].iloc[0]) else part["low"].iloc[0]
        missing = [key for key, low in lows.items() if low is None]
        failed = [
            f"{run} {metric} ({low:.1f})" for (run, metric), low in lows.items() if low is not None and low <= -MARGIN
        ]
        if missing:
            verdicts[n] = f"missing: {missing[0][0]} {missing[0][1]} - {missing[0][1]}_ref"
        else:
            verdicts[n] = "passes" if not failed else f"fails: lower end <= -{MARGIN:g} for " + ", ".join(failed)
    if any(v.startswith("missing") for v in verdicts.values()):
        return None, verdicts
    supported = reference
    for n in reversed(ns[:-1]):  # the smallest N from which every larger N below the reference passes
        if verdicts[n] != "passes":
            break
        supported = n
    return supported, verdicts


def select(sweep: pd.DataFrame, run: str, quantity: str, layer: str = "all") -> pd.DataFrame:
    part = sweep[(sweep["run"] == run) & (sweep["quantity"] == quantity) & (sweep["layer"].astype(str) == layer)]
    return part.sort_values("n")


def draw_figure(sweep: pd.DataFrame, protocol: dict, path: Path) -> None:
    """Panel 1: rel_C0 and rel_P (all layers) against N; panel 2: S and NS minus the reference's with their 95%
    paired intervals, MEMIT and ENCORE. Log N axes, the reference N marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, layers = int(protocol["reference_n"]), protocol["layers"].replace(" ", ", ")
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for quantity, label in (("rel_C0", "C0"), ("rel_P", "AlphaEdit projector P")):
        part = select(sweep, "statistics", quantity).query("n != @ref")  # 0 at the reference: off a log axis
        left.plot(part["n"], part["value"], marker="o", label=label)
    if (sweep["quantity"].isin(["rel_C0", "rel_P"]) & (sweep["value"] > 0)).any():
        left.set_yscale("log")
    left.set_ylabel("||X_N - X_ref||_F / ||X_ref||_F")
    left.set_title(f"C0 and P of N documents vs the reference N = {ref:,}\n(layers {layers} together)", fontsize=10)
    for shift, (run, metric) in enumerate([(r, m) for r in RUNS.values() for m in DIFFERENCES]):
        part = select(sweep, run, f"{metric}_diff")
        error = [part["value"] - part["low"], part["high"] - part["value"]]
        x = part["n"] * 1.06 ** (shift - 1.5)  # side by side on the log axis
        right.errorbar(x, part["value"], yerr=error, marker="os^D"[shift], capsize=3, label=f"{run} {metric}")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_ylabel("points (N minus reference)")
    right.set_title(f"S and NS after {int(protocol['num_edits']):,} edits minus the reference's\n"
                    "paired over the same facts, 95% bootstrap intervals", fontsize=10)  # fmt: skip
    ns = [int(n) for n in protocol["ns"].split()]
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xticks(ns, [f"{n:,}" for n in ns], minor=False)
        axis.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        axis.set_xlim(min(ns) / 1.5, max(ns) * 1.5)
        axis.axvline(ref, color="grey", linestyle=":", label=f"reference N = {ref:,}")
        axis.set_xlabel("N (Wikipedia documents in C0)")
        axis.legend(fontsize=8)
    figure.suptitle(f"{protocol['model']}, {protocol['dataset']}: how many documents C0 needs", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)


def cell(sweep: pd.DataFrame, n: int, run: str, quantity: str, fmt: str = ".1f", interval: bool = False) -> str:
    """One number of sweep.csv as text ("—" where there is none), with its interval when asked."""
    part = select(sweep, run, quantity).query("n == @n")
    if part.empty or pd.isna(part["value"].iloc[0]):
        return "—"
    found = part.iloc[0]
    return f"{found['value']:{fmt}}" + (f" [{found['low']:{fmt}}, {found['high']:{fmt}}]" if interval else "")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def results_page(sweep: pd.DataFrame, timings: pd.DataFrame, protocol: dict) -> str:
    """results.md: the protocol, what is missing, the figure and three tables, every number from the CSVs."""
    p, ns = protocol, [int(n) for n in protocol["ns"].split()]
    missing = sweep[(sweep["quantity"] == "available") & (sweep["value"] == 0)]
    null_dims = sweep[sweep["quantity"] == "null_dim"].groupby("n")["value"]
    dims = {n: ", ".join(f"{v:.0f}" for v in values) for n, values in null_dims}
    times = ["wall_s", "statistics_s", "statistics_compute_s", "edit_MEMIT_s", "edit_ENCORE_s"]
    lines = [f"# How many documents C0 needs: {p['model']}, N = {', '.join(f'{n:,}' for n in ns)}", "",
             "Generated by `python tools/statistics_sweep.py analyse` from `sweep.csv`, `timings.csv` and "
             "`protocol.csv` beside this page: every number below is read from them.", "", "## Protocol", "",
             f"- {int(p['num_edits']):,} sequential {p['dataset']} edits (order {p['order']}, batches of "
             f"{int(p['batch_size']):,}, seed {p['seed']}) with MEMIT and ENCORE (MEMIT's `mpes_nc`), once per N.",
             f"- C0 of N documents: the first N of one fixed permutation of `{p['corpus']}` (sha256 "
             f"`{p['corpus_sha256'][:12]}…`), at most {p['max_length']} tokens each, {p['mom2_dtype']}, layers "
             f"{p['layers'].replace(' ', ', ')}; the reference is N = {int(p['reference_n']):,}. AlphaEdit's "
             f"projector P: the null space of C0 below τ = {p['nullspace_threshold']}.",
             f"- Editing in {p['edit_precision']}, scoring in {p['score_precision']}, on {p['device']}; "
             f"{p['threads']} thread per job, {p['statistics_threads']} for the statistics job.",
             f"- Intervals: 95% percentile bootstrap over the facts, {int(p['bootstrap_resamples']):,} resamples "
             f"(seed {p['bootstrap_seed']}); a difference resamples both runs with the same facts.",
             f"- Code: {', '.join(f'`{c}`' for c in p['code_commits'].split())}.", ""]  # fmt: skip
    if not missing.empty:
        lines += ["## Missing", "", *(f"- N = {int(r.n):,}, {r.run}: {r.note}" for r in missing.itertuples()), ""]
    lines += [f"![C0, P and the edit scores against N]({FIGURE})", "", "## C0 and AlphaEdit's projector", "",
              "rel = ||X_N − X_ref||_F / ||X_ref||_F over all edited layers (per layer: `sweep.csv`); dim P = tr P "
              "per layer.", ""]  # fmt: skip
    lines += table(["N", "rel C0", "rel P", "dim P per layer"],
                   [[f"{n:,}", cell(sweep, n, "statistics", "rel_C0", ".2e"),
                     cell(sweep, n, "statistics", "rel_P", ".2e"), dims.get(n, "—")] for n in ns])  # fmt: skip
    lines += [f"## Editing after {int(p['num_edits']):,} edits", "",
              "ES, PS, NS, S (×100); S − S_ref and NS − NS_ref paired over the same facts, with 95% intervals; "
              "ΔW distance: ||ΔW_N − ΔW_ref||_F / ||ΔW_ref||_F over all edited layers, ΔW = W edited − W "
              "unedited.", ""]  # fmt: skip
    lines += table(["N", "run", *SCORES, "S − S_ref", "NS − NS_ref", "ΔW distance"],
                   [[f"{n:,}", run, *(cell(sweep, n, run, m) for m in SCORES),
                     *(cell(sweep, n, run, f"{m}_diff", interval=True) for m in DIFFERENCES),
                     cell(sweep, n, run, "rel_dW", ".2e")] for run in RUNS.values() for n in ns])  # fmt: skip
    supported, verdicts = supported_n(sweep)
    lines += ["## Which N to choose", "",
              f"The rule, fixed before the reference runs finished: the smallest N below the reference at which, and at "
              f"every larger N below it, MEMIT and ENCORE both lose less than {MARGIN:g} point of S and of NS: the "
              f"lower end of each paired 95% interval of S − S_ref and NS − NS_ref lies above −{MARGIN:g}. If no "
              "smaller N passes, the reference N itself.", "",
              *(f"- N = {n:,}: {verdict}" for n, verdict in verdicts.items()), "",
              "**Supported N: " + ("not decided (an N is missing)" if supported is None else f"{supported:,}")
              + "** (`encore.plan.costs.SUPPORTED_N_SAMPLES`).", ""]  # fmt: skip
    lines += ["## Time per N", "", "Seconds on this machine: the Snakemake call, the jobs' benchmark files, C0 alone "
              "(the statistics manifest; ~0 when cached).", ""]  # fmt: skip
    lines += table(["N", "whole N", "statistics job", "C0 alone", "edit MEMIT", "edit ENCORE"],
                   [[f"{int(r['n']):,}", *("—" if pd.isna(r[c]) else f"{r[c]:,.1f}" for c in times)]
                    for _, r in timings.iterrows()])  # fmt: skip
    return "\n".join(lines)


def render(publish: Path) -> None:
    """The figure and results.md of ``publish`` from its sweep.csv, timings.csv and protocol.csv alone."""
    paths = [data_path(publish, name) for name in ("sweep.csv", "timings.csv", "protocol.csv")]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: missing; `tools/statistics_sweep.py analyse --out DIR --publish {publish}` writes it"
            )
    sweep, timings = pd.read_csv(paths[0]), pd.read_csv(paths[1])
    protocol = dict(pd.read_csv(paths[2], dtype=str, keep_default_na=False).itertuples(index=False))
    draw_figure(sweep, protocol, publish / FIGURE)
    (publish / "results.md").write_text(results_page(sweep, timings, protocol))
    print(f"wrote {publish / 'results.md'} and {publish / FIGURE}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("published", type=Path, help="the published sweep, e.g. docs/results/statistics-sweep")
    render(parser.parse_args(argv).published)


if __name__ == "__main__":
    from encore.cli import run

    run(main)
