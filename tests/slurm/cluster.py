"""A one-node Slurm for tests: Debian's slurmctld, slurmd and munge started without systemd (docs: slurm-ci.md).

State, spool, pid and log files live in one temporary folder; the configuration must be at
/etc/slurm/slurm.conf (the jobstep plugin drops SLURM_CONF from the jobs' environment, so the jobs' inner
``srun`` would find no configuration elsewhere). The node declares GPUs through GRES backed by stand-in
device files, so jobs asking for ``--gpus``/``--cpus-per-gpu`` are scheduled like on a GPU cluster (the
jobs themselves run on the CPU); it claims more CPUs than the machine has (``SlurmdParameters=config_overrides``)
so the production profile's ``cpus_per_gpu`` fits. ``OverMemoryKill`` makes Slurm kill a job step that uses
more memory than it asked for (polled every second), as cgroups would on a real cluster. Finished jobs are
written to a job-completion file (``jobcomp/filetxt``): the job records without a database.

Use as a context manager (``with SlurmCluster(tmp) as cluster: ...``) or from the shell for a smoke test:
``python tests/slurm/cluster.py`` (as root) starts it, runs one GPU job, prints its record and stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PROGRAMS = ["slurmctld", "slurmd", "sbatch", "sinfo", "munged"]
MARKER = "# written by tests/slurm/cluster.py"
CPUS = 16  # claimed (config_overrides): two jobs of the profile's cpus_per_gpu=8 side by side
GPUS = 2
NVIDIA_MAJOR = 195  # the stand-ins look like /dev/nvidia0, /dev/nvidia1 (never opened: no driver)
ACCOUNT = "encore-ci"
PARTITIONS = ("cpu", "gpu")  # the production profile's partition names (profiles/slurm/profile.yaml)


class SlurmError(RuntimeError):
    pass


def missing_programs() -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in PROGRAMS if shutil.which(name, path=search) is None]


def install_packages() -> None:
    """apt-get install the daemons when a program is missing (root only; about 10 s with the update)."""
    if not missing_programs():
        return
    if os.geteuid() != 0:
        raise SlurmError(f"Slurm programs {missing_programs()} missing: apt-get install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        result = subprocess.run(step, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise SlurmError(
                f"{' '.join(step)} failed ({result.returncode}): {last}; install {' '.join(PACKAGES)} first"
            )


def real_memory_mb() -> int:
    """What the node offers: 90% of the available memory (slurmd refuses a node claiming more than it has)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise SlurmError("/proc/meminfo has no MemAvailable line")


def run(*command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SlurmError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


class SlurmCluster:
    """One node named after this machine, partitions ``cpu`` (default) and ``gpu``, GRES gpu:2."""

    def __init__(self, root: Path, memory_mb: int | None = None):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.memory_mb = memory_mb or real_memory_mb()
        self.jobcomp = self.root / "jobcomp.log"
        self.ctld_log = self.root / "slurmctld.log"
        self.slurmd_log = self.root / "slurmd.log"
        self.devices = [self.root / "dev" / f"gpu{i}" for i in range(GPUS)]
        self._processes: list[subprocess.Popen] = []
        self._saved: dict[Path, bytes | None] = {}
        self._munged_started = False
        self._hosts_added = False

    # ------------------------------------------------------------------ configuration
    def slurm_conf(self) -> str:
        r, host = self.root, self.host
        return "\n".join([
            MARKER,
            "ClusterName=encore-ci", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "SlurmdParameters=config_overrides", "ReturnToService=2",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={self.ctld_log}", f"SlurmdLogFile={self.slurmd_log}", "SlurmctldDebug=info",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt", f"JobCompLoc={self.jobcomp}",
            "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=task=1",
            "JobAcctGatherParams=OverMemoryKill",
            "MinJobAge=3600",  # finished jobs stay visible to squeue (the status command) and scontrol for an hour
            "KillWait=5",
            "GresTypes=gpu",
            f"NodeName={host} CPUs={CPUS} RealMemory={self.memory_mb} Gres=gpu:{GPUS} State=UNKNOWN",
            f"PartitionName={PARTITIONS[0]} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            *(f"PartitionName={p} Nodes={host} MaxTime=INFINITE State=UP" for p in PARTITIONS[1:]),
            "",
        ])  # fmt: skip

    def gres_conf(self) -> str:
        return "\n".join([MARKER, *(f"NodeName={self.host} Name=gpu File={d}" for d in self.devices), ""])

    def _write(self, path: Path, text: str) -> None:
        if path not in self._saved:
            self._saved[path] = path.read_bytes() if path.exists() else None
            old = self._saved[path]
            if old is not None and MARKER.encode() not in old:
                raise SlurmError(f"{path} exists and was not written by this test: move it away to run the test")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def _resolve_hostname(self) -> None:
        try:
            socket.gethostbyname(self.host)
        except OSError:
            with open("/etc/hosts", "a") as hosts:
                hosts.write(f"127.0.0.1 {self.host}  {MARKER}\n")
            self._hosts_added = True

    # ------------------------------------------------------------------ daemons
    def _start_munge(self) -> None:
        if run("sh", "-c", "munge -n | unmunge", check=False).returncode == 0:
            return  # already running
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        run("runuser", "-u", "munge", "--", "/usr/sbin/munged")
        self._munged_started = True

    def _daemon(self, program: str, *options: str) -> None:
        """Start a daemon in the foreground (-D) as a child of this process; its stderr in <root>/<program>.out."""
        with open(self.root / f"{program}.out", "w") as out:
            process = subprocess.Popen([f"/usr/sbin/{program}", "-D", *options], stdout=out, stderr=subprocess.STDOUT)
        self._processes.append(process)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise SlurmError(f"{process.args[0]} exited ({process.returncode}): {self.logs_tail()}")
            try:
                state = run("sinfo", "-h", "-N", "-o", "%t", check=False, timeout=5).stdout.split()
            except subprocess.TimeoutExpired:
                continue
            if state and all(s == "idle" for s in state):
                return
            time.sleep(0.5)
        raise SlurmError(f"node not idle after {timeout:.0f} s (sinfo: {state}): {self.logs_tail()}")

    def logs_tail(self, lines: int = 15) -> str:
        text = []
        for log in (self.ctld_log, self.slurmd_log):
            if log.exists():
                text.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(text)

    def start(self) -> SlurmCluster:
        install_packages()
        for sub in ("state", "spool", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for number, device in enumerate(self.devices):  # stand-in GPU devices: slurmd wants character devices
            if not device.exists():
                os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, number))
        self._resolve_hostname()
        self._write(SLURM_CONF, self.slurm_conf())
        self._write(GRES_CONF, self.gres_conf())
        self._start_munge()
        self._daemon("slurmctld", "-c", "-i")  # a clean state: no jobs from an earlier cluster
        self._daemon("slurmd")
        self.wait_idle()
        return self

    def stop(self) -> None:
        run("scancel", "--full", "--quiet", f"--partition={','.join(PARTITIONS)}", check=False)
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        if self._munged_started:
            pid_file = Path("/run/munge/munged.pid")
            if pid_file.exists():
                os.kill(int(pid_file.read_text()), 15)
            self._munged_started = False
        for path, old in self._saved.items():
            if old is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(old)
        self._saved.clear()
        if self._hosts_added:
            hosts = Path("/etc/hosts")
            hosts.write_text("".join(line for line in hosts.read_text().splitlines(True) if MARKER not in line))
            self._hosts_added = False

    def __enter__(self) -> SlurmCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ job records
    def records(self) -> list[dict[str, str]]:
        """Finished jobs from the job-completion file: one dict per job (JobId, Name, JobState, Partition,
        TimeLimit, Account, Tres with cpu, mem and gres/gpu, ...), oldest first."""
        if not self.jobcomp.exists():
            return []
        return [parse_record(line) for line in self.jobcomp.read_text().splitlines() if line.strip()]

    def job(self, job_id: str) -> dict[str, str]:
        """scontrol's record of a job (pending, running or finished within MinJobAge)."""
        return parse_record(run("scontrol", "-o", "show", "job", job_id).stdout)


def parse_record(line: str) -> dict[str, str]:
    """``Key=Value Key=Value ...`` (values without spaces) into a dict."""
    fields = {}
    for item in line.split():
        key, sep, value = item.partition("=")
        if sep:
            fields[key] = value
    return fields


def main(argv=None) -> None:
    """Smoke test: start, run one GPU job, print its record, stop; ``--hold``: keep running until SIGTERM/SIGINT."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", action="store_true", help="keep the cluster running until SIGTERM or Ctrl-C")
    args = parser.parse_args(argv)
    with SlurmCluster(Path(tempfile.mkdtemp(prefix="slurm-"))) as cluster:
        print(run("sinfo").stdout, f"state and logs: {cluster.root}", sep="", flush=True)
        if args.hold:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
            return
        job = run("sbatch", "--parsable", "-p", "gpu", "-A", ACCOUNT, "--gpus=1", "--cpus-per-gpu=8", "--mem=100",
                  "-t", "1", "-o", str(cluster.root / "smoke.out"), "--wrap",
                  "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES").stdout.strip()  # fmt: skip
        deadline = time.time() + 60
        while not any(r.get("JobId") == job for r in cluster.records()) and time.time() < deadline:
            time.sleep(0.5)
        print(cluster.job(job), (cluster.root / "smoke.out").read_text(), sep="\n")


if __name__ == "__main__":
    main()
