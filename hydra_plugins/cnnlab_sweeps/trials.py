"""What the ``pool`` and ``ray`` launchers do with one trial, wherever it runs: Hydra's job, as Hydra's own
launchers run it, plus a record of it in the trial's folder.

A trial is Hydra's job: the task function called with the trial's full sweep config by ``hydra.core.utils.run_job``
in another process (as hydra-joblib-launcher's ``execute_job`` does), so every Hydra feature works in it —
``hydra.job.num``/``id``, ``hydra.sweep.subdir=${hydra.job.override_dirname}``, ``hydra.job.chdir``, callbacks,
``${hydra:...}``, the sweep's ``hydra.*`` overrides — and its ``JobReturn`` comes back to the sweeper. Nothing here
knows the application.

Each trial's folder gets ``trial.json`` (written atomically): its overrides, where it ran, when it started and
ended, and once it has finished Hydra's job status and, when it is JSON, its return value. A sweep started again
with the same ``hydra.sweep.dir`` returns the stored result of a trial that completed instead of running it again.

While a trial runs, its process's command line (``sys.argv`` and ``__main__``'s module) is one that runs exactly
that trial again: ``python -m hydra_plugins.cnnlab_sweeps._worker <pickled job> [hydra overrides]``. Lightning's
DDP launcher starts a run's other processes by running that command line with ``hydra.run.dir=<run dir>``
appended, so a trial with ``trainer=ddp`` trains in all its processes, in its own folder.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module without registering it in
# sys.modules, where @dataclass would have to look string annotations up.
import contextlib
import copy
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

RECORD = "trial.json"
WORKER_MODULE = "hydra_plugins.cnnlab_sweeps._worker"


@dataclass
class Trial:
    num: int
    overrides: List[str]
    run_dir: Path
    sweep_config: Optional[DictConfig] = field(default=None, repr=False)


@dataclass
class Job:
    """Everything another process needs to run one trial: what joblib's ``execute_job`` receives, plus the
    launching process's working directory and import path, and where the trial runs (for its record)."""

    num: int
    overrides: List[str]
    run_dir: str
    hydra_context: HydraContext
    config: DictConfig
    task_function: TaskFunction
    singleton_state: Dict[Any, Any]
    cwd: str
    sys_path: List[str]
    placement: Any = None
    sweep_config: Optional[DictConfig] = None  # composed by the launcher, as hydra-ray-launcher does


def sweep_config(hydra_context: HydraContext, config: DictConfig, num: int, overrides: Sequence[str]) -> DictConfig:
    """The trial's config, as Hydra's launchers build it."""
    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = f"{cfg.hydra.job.name}_{num}"
        cfg.hydra.job.num = num
    return cfg


def plan(hydra_context: HydraContext, config: DictConfig, num: int, overrides: Sequence[str]) -> Trial:
    """The trial and its folder, resolved from ``hydra.sweep`` exactly as ``run_job`` will resolve it."""
    cfg = sweep_config(hydra_context, config, num, overrides)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the sweep dir or subdir
    try:
        run_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    finally:
        HydraConfig.instance().cfg = previous
    return Trial(num, list(overrides), run_dir.absolute(), cfg)


def job(trial: Trial, hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction,
        singleton_state: Dict[Any, Any], placement: Any = None) -> Job:
    return Job(trial.num, trial.overrides, str(trial.run_dir), hydra_context, config, task_function,
               singleton_state, os.getcwd(), list(sys.path), placement, trial.sweep_config)


# --- the trial's record --------------------------------------------------------------------------------------


def write_json_atomically(path: Path, data: Any) -> None:
    """Replace ``path`` by ``data`` as JSON in one step: readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as f:
            f.write(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def read_record(run_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        record = json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def update_record(run_dir: Path, **fields: Any) -> Dict[str, Any]:
    record = read_record(run_dir) or {}
    record.update(fields)
    write_json_atomically(Path(run_dir) / RECORD, record)
    return record


def record_start(job: Job) -> None:
    """A new record for this run of the trial (a previous run's outcome no longer describes the folder)."""
    write_json_atomically(Path(job.run_dir) / RECORD, {
        "num": job.num, "overrides": list(job.overrides), "placement": job.placement, "launched_at": time.time(),
        "pid": os.getpid(), "status": "RUNNING"})


def record_end(run_dir: Path, ret: JobReturn) -> None:
    fields: Dict[str, Any] = {"ended_at": time.time(), "status": ret.status.name}
    if ret.status == JobStatus.COMPLETED:
        try:
            fields["return_value"] = json.loads(json.dumps(ret._return_value, allow_nan=True))
        except (TypeError, ValueError):
            fields["return_value_repr"] = repr(ret._return_value)[:2000]  # not resumable: run again
    else:
        fields["error"] = f"{type(ret._return_value).__name__}: {ret._return_value}"
    update_record(run_dir, **fields)


def completed_return(trial: Trial, expected: Optional[Mapping[str, Any]] = None) -> Optional[JobReturn]:
    """The stored ``JobReturn`` of an earlier run of this very trial (same overrides) that completed, or None.

    ``expected``: items a mapping return value must also hold to count as completed (an application whose task
    function returns its failures, such as ``{"status": "failed"}``, names ``{"status": "completed"}``)."""
    record = read_record(trial.run_dir)
    if (record is None or record.get("status") != JobStatus.COMPLETED.name or record.get("overrides") != trial.overrides
            or "return_value" not in record):
        return None
    value = record["return_value"]
    if expected and not (isinstance(value, dict) and all(value.get(k) == v for k, v in expected.items())):
        return None
    assert trial.sweep_config is not None
    cfg = copy.deepcopy(trial.sweep_config)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(trial.run_dir)
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    chdir = cfg.hydra.job.chdir
    return JobReturn(overrides=list(trial.overrides), cfg=task_cfg, hydra_cfg=OmegaConf.create({"hydra": cfg.hydra}),
                     working_dir=str(trial.run_dir) if chdir else os.getcwd(), task_name=str(cfg.hydra.job.name),
                     status=JobStatus.COMPLETED, _return_value=value)


def failed_return(trial_or_job: Any, error: BaseException) -> JobReturn:
    """A failed ``JobReturn`` for a trial whose job never returned one (its process died)."""
    run_dir = str(trial_or_job.run_dir)
    return JobReturn(overrides=list(trial_or_job.overrides), working_dir=run_dir, task_name="",
                     status=JobStatus.FAILED, _return_value=error)


class TrialProcessDied(RuntimeError):
    """The process running a trial ended before the trial returned (a crash, ``os._exit``, out of memory)."""


# --- placement -----------------------------------------------------------------------------------------------

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def cpu_share(slots: int, cores: Optional[int] = None) -> Dict[str, str]:
    """Environment that gives one of ``slots`` concurrent trials its share of this machine's cores."""
    threads = str(max(1, (cores or os.cpu_count() or 1) // max(1, slots)))
    return {name: threads for name in THREAD_VARIABLES}


def apply_thread_share() -> None:
    """Make an already imported torch follow this process's ``OMP_NUM_THREADS`` (a later import reads it itself)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    torch = sys.modules.get("torch")
    if threads and threads.isdigit() and torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(int(threads))


# --- running the job -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def command_line_of(job_file: Optional[str]) -> Iterator[None]:
    """While the trial runs, this process's command line re-runs exactly this trial: what Lightning's DDP launcher
    runs (with ``hydra.run.dir=...`` appended) to start a run's other processes."""
    import __main__

    saved_argv, saved_spec = list(sys.argv), getattr(__main__, "__spec__", None)
    if job_file is not None:
        spec = importlib.util.find_spec(WORKER_MODULE)
        sys.argv = [spec.origin if spec is not None and spec.origin else sys.argv[0], job_file]
        __main__.__spec__ = spec
    try:
        yield
    finally:
        sys.argv = saved_argv
        __main__.__spec__ = saved_spec


@contextlib.contextmanager
def isolated_process_state(cwd: str, sys_path: Sequence[str]) -> Iterator[None]:
    """Run in the launching process's working directory and import path; leave environment and working
    directory as they were, for the process's next trial."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    sys.path[:] = list(sys_path) + [p for p in sys.path if p not in sys_path]
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        if dict(os.environ) != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)


def execute(job: Job, extra_overrides: Sequence[str] = (), job_file: Optional[str] = None,
            record: bool = True) -> JobReturn:
    """Run the trial's job in this process and return its ``JobReturn`` (hydra-joblib-launcher's ``execute_job``).

    ``extra_overrides``: ``hydra.*`` overrides for another process of the same trial (Lightning's DDP ranks:
    ``hydra.run.dir=<run dir>``, ``hydra.job.name=...``, ``hydra.output_subdir=null``); with ``hydra.run.dir``
    among them the job runs in that folder. ``job_file``: the pickled job, for the command line (see above).
    """
    setup_globals()
    Singleton.set_state(job.singleton_state)
    with isolated_process_state(job.cwd, job.sys_path):
        apply_thread_share()
        if job.sweep_config is not None and not extra_overrides:
            cfg = job.sweep_config  # this process's own copy: the job was unpickled here
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                for key in cfg.hydra.job.env_copy:  # this process's environment, as if composed here
                    cfg.hydra.job.env_set[key] = os.environ[key]
        else:
            cfg = sweep_config(job.hydra_context, job.config, job.num, [*job.overrides, *extra_overrides])
        with read_write(cfg.hydra), open_dict(cfg):
            if not any(o.startswith("hydra.run.dir=") for o in extra_overrides):
                cfg.hydra.run.dir = job.run_dir  # this trial's folder, for a process started as "this run"
        HydraConfig.instance().set_config(cfg)
        in_run_dir = any(o.startswith("hydra.run.dir=") for o in extra_overrides)
        if record:
            record_start(job)
        try:
            with command_line_of(job_file):
                ret = run_job(hydra_context=job.hydra_context, config=cfg, task_function=job.task_function,
                              job_dir_key="hydra.run.dir" if in_run_dir else "hydra.sweep.dir",
                              job_subdir_key=None if in_run_dir else "hydra.sweep.subdir")
        except BaseException as err:  # SystemExit, KeyboardInterrupt: not a job's failure, a stop of the process
            if record:
                record_end(Path(job.run_dir), failed_return(job, RuntimeError(f"the trial stopped: {err!r}")))
            raise
        if record:
            record_end(Path(job.run_dir), ret)
        return ret
