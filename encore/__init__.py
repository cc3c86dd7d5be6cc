"""encore: reproducible lifelong sequential knowledge editing (MEMIT, EMMET, AlphaEdit, ENCORE).

The layout follows the pipeline (workflow/rules: statistics -> edit -> evaluate -> report). Imports go one
way, from a layer to the same or a lower one, with no circle (tests/test_layout.py keeps this map honest):

    progress, environment, cli,     foundations: progress lines, the pinned environment, one-line errors of the
    settings, data/                 command-line tools, the typed config settings, the data an experiment uses
    models/                         model I/O: loading, per-family module names, hooks, tokens, devices
    editing/                        the statistics and edit rules: C0, keys, targets, the closed forms
    evaluation/                     the evaluate rule: metric rows of one model state
    reporting/                      the report rules: collected CSVs, tables, figures, claims, publishing a study
    session, experiment, api, plan/ entry points: one editing/evaluation code path (session) for the pipeline's
                                    stages (experiment) and the library API (api: ``from encore.api import
                                    load_editor``), the plan of a run (``python -m encore.plan``)
    measuring/                      tools that measure the code: benchmarks, precision fidelity, GPU and scale checks

* ``data/``: ``files`` (the registered data files: local or downloaded, checked against their sha256), ``datasets``
  (``EditRecord``, the CounterFact and zsRE loaders, orderings, corpus texts), ``record_formats`` (the ROME, MEND
  and EasyEdit record schemas), ``requests`` (edit requests in the authors' order, with their provenance).
* ``models/``: ``loading`` (packaged GGUF, hub, local directories), ``architecture`` (where the edited
  down-projection lives per family), ``hooks``, ``tokens``, ``prefix_attention`` (forwards that continue
  from recorded keys/values), ``decoding`` (batched greedy or sampled continuations with the key/value cache),
  ``device`` and ``precision`` (where and in which precision models run).
* ``editing/``: ``statistics`` (the statistics rule: C0 of every layer, computed or imported, and its manifest),
  ``covariance`` (C0 over the corpus, AlphaEdit's projector, the content-addressed cache), ``statistics_files``
  (the ROME/MEMIT lineage's file format: read, export) and ``statistics_sources`` (where such files come from:
  local, URL, hub; their import), ``context``, ``keys``,
  ``targets`` and ``target_forward`` (with ``mpes_stop``, the MPES rule), ``editors`` (per-layer closed forms,
  the editor registry), ``restraints`` (RECT, PRUNE), ``hparams``, ``sequential`` (the batch loop), ``snapshots``.
* ``evaluation/``: ``rows`` (every metric of one model state as tidy rows), ``protocols`` (the tag of every row:
  which facts, and how; built and selected by these names only), ``counterfact`` and ``zsre`` (the
  editing scores), ``efficacy`` (each batch's facts right after its update), ``generation_efficacy`` (greedy
  exact match), ``fluency``, ``downstream`` with ``prefix_scoring``, ``perplexity``, ``analysis`` (norms,
  activation shares).
* ``reporting/``: ``collect`` (the collect_results rule), ``summary`` (report_tables), ``paper_tables``
  (paper_outputs: tables, then ``figures`` with ``figure_kit`` and ``downstream_figures``), ``outputs`` (run names,
  the index of outputs), ``paper_values``, ``publish``, ``data_files`` (a published study's CSVs, gzip-compressed
  when large), ``combine``, ``precision_compounding`` (a bf16-mixed study against its fp32 runs, paired per
  snapshot), ``cpu_reproducibility`` (one run made on two CPUs, paired per snapshot), ``prediction`` (the dated 4,600-edit prediction answered), ``statistics_sweep`` (the N-sweep's page
  and figure from its CSVs), and ``claims/``: the paper's claims as rules fixed before the runs (``base``: a study's
  collected CSVs and paired per-fact scores; rules in ``editing``, ``norms``, ``general``; bootstrap
  ``intervals``; ``results``: the results page).
* ``plan/``: ``shapes`` (model shapes), ``costs`` (the cost model: FLOPs, bytes and seconds per rule; ``Planner``),
  the package itself: the config, Snakemake's per-rule resources, ``main``.
* ``measuring/``: ``benchmark`` (one batch three ways), ``precision_benchmark`` and ``precision_fidelity`` (fp32
  against bf16-mixed: speed, then fidelity over sequential edits), ``gpu_check``, ``scale_check``.
* ``api`` is not re-exported here: this root sits in the lowest layer, and importing the entry points from it
  would be an upward import and a circle (encore -> api -> experiment -> encore).
* ``schemas/`` holds the JSON schemas of the config (validated by the Snakefile; the defaults ``settings`` reads)
  and of the hyperparameter files (read by ``editing.hparams``).

Modules that moved keep their old name only as a one-line error naming the new one (``MOVED``).
"""

import importlib.abc
import sys

__version__ = "0.1.0"

# old module name -> new one; importing (or ``python -m``) an old name fails with one line naming the new one
MOVED = {
    "encore.datasets": "encore.data.datasets",
    "encore.record_formats": "encore.data.record_formats",
    "encore.benchmark": "encore.measuring.benchmark",
    "encore.precision_benchmark": "encore.measuring.precision_benchmark",
    "encore.precision_fidelity": "encore.measuring.precision_fidelity",
    "encore.gpu_check": "encore.measuring.gpu_check",
    "encore.scale_check": "encore.measuring.scale_check",
    "encore.evaluation.metrics": "encore.evaluation.counterfact",
    "encore.evaluation.zsre_metrics": "encore.evaluation.zsre",
    "encore.reporting.report": "encore.reporting.collect, encore.reporting.summary and encore.reporting.paper_tables",
    "encore.reporting.claims_base": "encore.reporting.claims.base",
    "encore.reporting.claims_editing": "encore.reporting.claims.editing",
    "encore.reporting.claims_norms": "encore.reporting.claims.norms",
    "encore.reporting.claims_general": "encore.reporting.claims.general",
    "encore.reporting.intervals": "encore.reporting.claims.intervals",
}


class _MovedModules(importlib.abc.MetaPathFinder):
    """Refuses the old names of moved modules with the new spelling (ModuleNotFoundError, one line)."""

    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            raise ModuleNotFoundError(f"{name} has moved to {MOVED[name]}", name=name)
        return None


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
