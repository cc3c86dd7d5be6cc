"""Tools that measure the code rather than a model's edits; no library module imports them (the top layer).

* ``benchmark``: one batch of edits three ways (per request, batched, batched + prefix reuse), side by side.
* ``precision_benchmark``: fp32 against bf16-mixed on one batch (``benchmark --compare-precision``).
* ``precision_fidelity``: the same facts edited sequentially in fp32 and in bf16-mixed, then scored.
* ``gpu_check``: one batch at a paper model's full shape on a GPU, the CPU and device paths compared.
* ``scale_check``: the plan of a run checked at paper shapes on this machine (docs/scale-check.md).

Each is run as ``python -m encore.measuring.<tool>`` and prints numbers; none asserts a speed.
"""
