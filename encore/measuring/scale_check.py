"""Check the plan at paper shapes on this machine: a random model with Llama-3-8B's layer widths.

    python -m encore.measuring.scale_check prepare --blocks 6 --out scale-check  # model, hyperparameters, config
    snakemake --cores all --configfile scale-check/config.yaml                  # the pipeline, with benchmark files
    python -m encore.measuring.scale_check compare --out scale-check            # measured vs planned, per job

The model has Llama-3-8B's d_model 4096, d_ff 14336, 32 query and 8 key/value heads, but only ``--blocks``
blocks and the packaged SmolLM2 tokenizer's vocabulary, so it fits a 24 GB machine; weights are random
(timing and memory do not depend on them). Snakemake's ``benchmark:`` files give each job's wall time and
peak RSS; the snapshots' sizes are read from disk. ``compare`` prints them beside ``encore.plan``'s prediction. When
other processes share the cores, the job's CPU time / threads ("cpu-based s") estimates its wall time on an
idle machine, which is what the plan's measured CPU rates describe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

LLAMA3_WIDTHS = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "rope_theta": 500000.0, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5}  # fmt: skip


def prepare(out: Path, blocks: int, layers: list[int], steps: int, edits: int, documents: int, resources: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from encore.models.loading import load_model

    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "llama3-8b-widths"
    tokenizer = load_model("smollm2-135m", cache_dir=Path(resources) / "models").tokenizer
    if not (model_dir / "config.json").exists():
        torch.manual_seed(0)
        config = LlamaConfig(**LLAMA3_WIDTHS, num_hidden_layers=blocks, vocab_size=len(tokenizer),
                             tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, initializer_range=0.02)  # fmt: skip
        model = LlamaForCausalLM(config)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        del model
    base = {"v_num_grad_steps": steps, "v_lr": 0.5, "mom2_update_weight": 15000, "mom2_n_samples": documents,
            "mom2_max_length": 512, "layers": layers, "source": "encore.measuring.scale_check: Llama-3-8B widths"}  # fmt: skip
    folder = out / "hparams" / "MEMIT"
    folder.mkdir(parents=True, exist_ok=True)
    variants = {"variants": {"mpes_nc": {"mpes": 1, "norm_lambda": 20}}}  # ENCORE
    (folder / "llama3-8b-widths.yaml").write_text(yaml.safe_dump({"editor": "memit", **base, **variants}))
    config = {"experiment": "scale-check", "model": str(model_dir.resolve()), "methods": ["memit"],
              "variants": {"memit": ["plain", "mpes_nc"]}, "num_edits": edits, "batch_size": 100, "snapshot_every": 1,
              "hparams_dir": str((out / "hparams").resolve()), "resources": resources, "device": "cpu", "threads": 2,
              "evaluation": {"generation": "none", "downstream": "none", "analysis": "final", "analysis_records": 20}}  # fmt: skip
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    print(f"wrote {model_dir}, {out / 'hparams'} and {out / 'config.yaml'}")


def measured(out: Path, workdir: Path) -> pd.DataFrame:
    """Wall time and peak RSS of every job from Snakemake's benchmark files; disk of each snapshot."""
    rows = []
    for path in sorted((workdir / "benchmarks" / "scale-check").rglob("*.tsv")):
        bench = pd.read_csv(path, sep="\t").iloc[0]
        job = str(path.relative_to(workdir / "benchmarks" / "scale-check").with_suffix(""))
        rows.append(
            {
                "job": job,
                "seconds": float(bench["s"]),
                "cpu_seconds": float(bench["cpu_time"]),
                "peak_rss_gib": float(bench["max_rss"]) / 1024,
            }
        )
    frame = pd.DataFrame(rows)
    sizes = {}
    for manifest in (workdir / "results" / "scale-check").rglob("snapshots/*/manifest.json"):
        directory = manifest.parent
        sizes[str(directory.relative_to(workdir / "results" / "scale-check"))] = sum(
            f.stat().st_size for f in directory.iterdir() if f.is_file()
        )
    return frame, sizes


def compare(out: Path, workdir: Path) -> pd.DataFrame:
    from encore.plan import experiment_hparams, load_config
    from encore.plan.costs import Planner

    config = {**load_config([]), **yaml.safe_load((out / "config.yaml").read_text())}
    planner = Planner(config, experiment_hparams(config), "cpu")
    frame, sizes = measured(out, workdir)
    threads = config.get("threads", 2)
    plain = planner.runs[("memit", "plain")]
    rows = []
    for item in frame.itertuples():
        parts = item.job.split("/")
        if parts[0] == "statistics":
            cost = planner.statistics(plain)
        elif parts[0] == "unedited":
            cost = planner.evaluation(config["num_edits"], {"analysis": True}, "evaluate_unedited", 1)
        elif parts[-1].startswith("edit_"):
            cost = planner.edit_segment(planner.runs[(parts[0], parts[1])], 1, "edit_segment", 1)
        else:
            cost = planner.evaluation(config["num_edits"], {"analysis": True}, "evaluate_snapshot", 1)
        idle = item.cpu_seconds / threads
        rows.append({"job": item.job, "wall s": round(item.seconds), "cpu-based s": round(idle),
                     "planned s": round(cost.seconds), "time ratio": round(idle / cost.seconds, 2),
                     "peak RSS GiB": round(item.peak_rss_gib, 2), "planned RSS GiB": round(cost.host_bytes / 2**30, 2),
                     "RSS ratio": round(item.peak_rss_gib / (cost.host_bytes / 2**30), 2)})  # fmt: skip
    for name, size in sorted(sizes.items()):
        method, variant = name.split("/")[:2]
        planned = planner.edit_segment(planner.runs[(method, variant)], 1, "edit_segment", 1).disk_bytes
        rows.append({"job": f"{name} (snapshot bytes)", "disk MB": round(size / 1e6, 1),
                     "planned disk MB": round(planned / 1e6, 1), "disk ratio": round(size / planned, 3)})  # fmt: skip
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    (out / "comparison.json").write_text(json.dumps(rows, indent=1, default=str))
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["prepare", "compare"])
    parser.add_argument("--out", default="scale-check", type=Path)
    parser.add_argument("--workdir", default=".", type=Path, help="where snakemake ran (results/, benchmarks/)")
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--layers", default="2,3", help="edited layers")
    parser.add_argument("--steps", type=int, default=5, help="v_num_grad_steps (fewer than the paper's 25 for time)")
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--documents", type=int, default=20, help="corpus documents for the statistics")
    parser.add_argument("--resources", default="resources")
    args = parser.parse_args(argv)
    if args.action == "prepare":
        prepare(
            args.out,
            args.blocks,
            [int(x) for x in args.layers.split(",")],
            args.steps,
            args.edits,
            args.documents,
            args.resources,
        )
    else:
        compare(args.out, args.workdir)


if __name__ == "__main__":
    from encore.cli import run

    run(main)
