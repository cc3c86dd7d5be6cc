"""encore: reproducible lifelong sequential knowledge editing (MEMIT, EMMET, AlphaEdit, ENCORE).

The layout follows the pipeline (workflow/rules: statistics -> edit -> evaluate -> report). Imports go one
way, from a layer to the same or a lower one (tests/test_layout.py):

    progress, environment, datasets,   foundations: progress lines, the pinned environment, the data sets and
    record_formats, settings           their record schemas (ROME, MEND, EasyEdit), the typed config settings
    models/                            model I/O: loading, per-family module names, hooks, tokens, devices
    editing/                           the statistics and edit rules: C0, keys, targets, the closed forms
    evaluation/                        the evaluate rule: metric rows of one model state
    reporting/                         the report rule: tables, figures, claims, publishing a study
    session, experiment, api, plan,    entry points: one editing/evaluation code path (session) for the pipeline's
    benchmark, gpu_check, scale_check  stages (experiment) and the library API (api: ``from encore.api import
                                       load_editor``), the plan of a run, the command-line checks

* ``models/``: ``loading`` (packaged GGUF, hub, local directories), ``architecture`` (where the edited
  down-projection lives per family), ``hooks``, ``tokens``, ``prefix_attention`` (forwards that continue
  from recorded keys/values) and ``device`` (where and in which precision models run).
* ``editing/``: ``covariance`` (the statistics rule; it lives here because C0 and AlphaEdit's projector
  are inputs of the editors and the projector comes from ``editors``), ``context``, ``keys``,
  ``targets`` and ``target_forward``, ``editors`` (per-layer closed forms), ``restraints`` (RECT, PRUNE:
  what restraining editors do to an update), ``hparams``, ``sequential`` (the batch loop), ``snapshots`` and
  ``statistics_files`` (the ROME/MEMIT lineage's statistics files: import, export).
* ``evaluation/``: ``rows`` (every metric of one model state as tidy rows), ``metrics`` (CounterFact),
  ``zsre_metrics``, ``efficacy`` (each batch's facts right after its update), ``generation_efficacy`` (greedy
  exact match), ``fluency``, ``downstream`` with ``prefix_scoring``, ``perplexity``, ``analysis`` (norms,
  activation shares).
* ``reporting/``: ``outputs`` (run names, the index of outputs), ``report`` (collected CSVs, tables),
  ``figures`` (with ``figure_kit`` and ``downstream_figures``), ``paper_values``, ``claims`` (with
  ``claims_base``, ``claims_editing``, ``claims_norms``, ``claims_general`` and ``intervals``), ``publish``,
  ``data_files`` (a published study's CSVs, gzip-compressed when large), ``combine``.
* ``api`` is not re-exported here: this root sits in the lowest layer, and importing the entry points from it
  would be an upward import and a circle (encore -> api -> experiment -> encore).
* ``datasets`` stays a top-level module (not a package: one concept, used by editing and evaluation
  alike). The other top-level modules are either used by every layer (``progress``, ``environment``) or
  use every layer (the entry points), so they stay at the top level rather than in a ``tools/`` package,
  which would have to sit both below and above the rest.
* ``schemas/`` holds the JSON schema of the hyperparameter files (read by ``editing.hparams``).
"""

__version__ = "0.1.0"
