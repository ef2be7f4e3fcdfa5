"""What every cnnlab launcher does with a trial, whoever places it: give it a run dir, skip it when it already
completed, run it as its own ``cnnlab train`` process, and read its outcome from its results.json."""

# No `from __future__ import annotations`: see pool_launcher.py.
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict


@dataclass
class Trial:
    num: int
    overrides: List[str]
    run_dir: Path


def plan(hydra_context: HydraContext, config: DictConfig, num: int, overrides: Sequence[str]) -> Trial:
    """The trial's run dir, resolved from ``hydra.sweep`` exactly as Hydra's own launchers do."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = sweep_config.hydra.job.num = num
    return Trial(num, list(overrides), Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir))


def completed_outcome(trial: Trial) -> Optional[Dict[str, Any]]:
    """The results of an earlier, completed run of this very trial (same overrides), or None."""
    marker, results = trial.run_dir / "trial.json", trial.run_dir / "results.json"
    if not (marker.is_file() and results.is_file()):
        return None
    if json.loads(marker.read_text())["overrides"] != trial.overrides:
        return None
    outcome = json.loads(results.read_text())
    return outcome if outcome.get("status") == "completed" else None


def command(trial: Trial, config: DictConfig) -> List[str]:
    """``cnnlab train`` for this trial in run mode, with the sweep's recipe folders and one W&B group per sweep."""
    line = [sys.executable, "-m", "cnnlab", "train", *trial.overrides, f"hydra.run.dir={trial.run_dir}"]
    for source in config.hydra.runtime.config_sources:
        if source.provider == "command-line":
            line += ["--config-dir", source.path.removeprefix("file://")]
    if not any(o.startswith("group=") for o in trial.overrides):
        line.append(f"group={Path(str(config.hydra.sweep.dir)).name}")
    return line


def run_process(trial: Trial, line: List[str], env: Dict[str, str], placement: Any) -> Dict[str, Any]:
    """Run the trial's process to the end (console output to console.log) and return its outcome."""
    trial.run_dir.mkdir(parents=True, exist_ok=True)
    (trial.run_dir / "results.json").unlink(missing_ok=True)
    marker = {"overrides": trial.overrides, "placement": placement, "launched_at": time.time()}
    (trial.run_dir / "trial.json").write_text(json.dumps(marker))
    with open(trial.run_dir / "console.log", "w") as console:
        code = subprocess.run(line, env=env, stdout=console, stderr=subprocess.STDOUT).returncode
    marker["ended_at"] = time.time()  # the process's lifetime: what "running at the same time" means for slots
    (trial.run_dir / "trial.json").write_text(json.dumps(marker))
    results = trial.run_dir / "results.json"
    if results.is_file():
        return json.loads(results.read_text())
    return {"status": "failed", "error": f"the trial process exited with code {code} before writing results "
                                         f"(killed or out of memory? see {trial.run_dir / 'console.log'})"}


def cpu_share(slots: int) -> Dict[str, str]:
    """Environment that gives one of ``slots`` concurrent trials its share of this machine's cores."""
    threads = str(max(1, (os.cpu_count() or 1) // slots))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def job_return(trial: Trial, outcome: Dict[str, Any]) -> JobReturn:
    # Completed from Hydra's point of view either way: a failed trial must not stop the sweep.
    return JobReturn(overrides=trial.overrides, working_dir=str(trial.run_dir), task_name="train",
                     status=JobStatus.COMPLETED, _return_value=outcome)
