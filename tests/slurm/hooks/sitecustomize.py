"""Instrumentation of the rule scripts for tests/test_slurm.py, loaded by every Python of a run whose PYTHONPATH
starts with this folder (sbatch --export=ALL carries it into the Slurm jobs). It acts only in Snakemake's copies of
the rule scripts (``.snakemake/scripts/tmpXXXX.<script>.py``) and only with these variables set:

- ``ENCORE_TEST_ENV_DIR``: write the environment the script sees (Slurm job id, GPU binding, threads, data
  directory, interpreter) to ``<dir>/<script>.<pid>.json``.
- ``ENCORE_TEST_BALLAST``: ``{"script": ..., "rule": ..., "flag": path, "extra_mb": n}``: in the Slurm jobs of
  that rule (the job's comment, read with scontrol), the script holds n MB more than the job's first memory
  request, as a job that outgrows its plan; the size is kept in the flag file, so a retry holds the same amount.
- ``ENCORE_TEST_HOLD``: ``{"script": ..., "target": "module:function", "match": ..., "flag": path}``: after the
  first call of the function whose path argument contains ``match``, create the flag and wait (the test cancels
  the job there); once the flag exists, calls pass through.
"""

import json
import os
import subprocess
import sys

_argv0 = sys.argv[0] if sys.argv else ""
_SCRIPT = ""
if "/.snakemake/scripts/" in _argv0 and _argv0.endswith(".py"):
    _SCRIPT = _argv0.rsplit(".", 2)[-2]  # tmpXXXX.edit_segment.py -> edit_segment

if _SCRIPT and os.environ.get("ENCORE_TEST_ENV_DIR"):
    _keys = ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "ENCORE_DATA_DIR", "SLURM_CONF", "TMPDIR")
    _seen = {key: os.environ.get(key) for key in _keys}
    _seen.update(script=_SCRIPT, python=sys.executable, cwd=os.getcwd())
    _path = os.path.join(os.environ["ENCORE_TEST_ENV_DIR"], f"{_SCRIPT}.{os.getpid()}.json")
    with open(_path, "w") as _handle:
        json.dump(_seen, _handle)

_ballast_spec = json.loads(os.environ.get("ENCORE_TEST_BALLAST") or "null")
if _SCRIPT and _ballast_spec and _ballast_spec["script"] == _SCRIPT and os.environ.get("SLURM_JOB_ID"):
    _job = subprocess.run(["scontrol", "-o", "show", "job", os.environ["SLURM_JOB_ID"]], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    _fields = dict(item.partition("=")[::2] for item in _job.split())
    if _fields.get("Comment", "").startswith(f"rule_{_ballast_spec['rule']}_"):
        if os.path.exists(_ballast_spec["flag"]):
            _mb = int(open(_ballast_spec["flag"]).read())
        else:
            _mb = int(_fields["MinMemoryNode"].rstrip("M")) + int(_ballast_spec["extra_mb"])
            with open(_ballast_spec["flag"], "w") as _handle:
                _handle.write(str(_mb))
        _BALLAST = bytearray(b"\1") * (_mb << 20)  # touched pages: resident memory Slurm counts

_hold = json.loads(os.environ.get("ENCORE_TEST_HOLD") or "null")
if _SCRIPT and _hold and _hold["script"] == _SCRIPT:
    import importlib
    import time

    _module, _, _name = _hold["target"].partition(":")
    _owner = importlib.import_module(_module)
    _original = getattr(_owner, _name)

    def _held(*args, **kwargs):
        result = _original(*args, **kwargs)
        target = " ".join(str(a) for a in args if isinstance(a, str | os.PathLike))
        if _hold["match"] in target and not os.path.exists(_hold["flag"]):
            open(_hold["flag"], "w").close()
            time.sleep(600)  # cancelled here by the test
        return result

    setattr(_owner, _name, _held)
