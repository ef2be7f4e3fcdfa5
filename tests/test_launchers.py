"""The ``pool`` and ``ray`` launchers are Hydra launchers like Hydra's own: Hydra's launcher test suites, run the way
hydra-joblib-launcher and hydra-ray-launcher run them, and the bugs a subprocess-per-trial design had."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
# their fixtures (hydra_sweep_runner, hydra_restore_singletons) come with hydra-core's pytest plugin
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite


from conftest import QUICK, run_cli

POOL = ["hydra.launcher.slots=2", "hydra.launcher.gpus=[]"]
RAY = ["hydra.launcher.num_cpus=2"]


@pytest.fixture(scope="module", autouse=True)
def ray_stops() -> object:
    """A local Ray started by the in-process suites stops with this module."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def test_discovery() -> None:
    """Hydra finds both launchers in hydra_plugins/, and their configs as hydra/launcher=pool, =cnnlab_ray."""
    from hydra.core.config_store import ConfigStore

    names = [x.__name__ for x in Plugins.instance().discover(Launcher)]
    assert "PoolLauncher" in names and "RayLauncher" in names
    launchers = ConfigStore.instance().repo["hydra"]["launcher"]
    assert "pool.yaml" in launchers and "cnnlab_ray.yaml" in launchers


@pytest.mark.parametrize("launcher_name, overrides", [("pool", POOL)])
class TestPoolLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "pool"}, {"override hydra/hydra_logging": "hydra_debug"},
                    {"override hydra/job_logging": "disabled"}]}, ["-m", *POOL])],
)
class TestPoolLauncherIntegration(IntegrationTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("launcher_name, overrides", [("cnnlab_ray", RAY)])
class TestRayLauncher(LauncherTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "cnnlab_ray"}, {"override hydra/hydra_logging": "hydra_debug"},
                    {"override hydra/job_logging": "disabled"}]}, ["-m", *RAY])],
)
class TestRayLauncherIntegration(IntegrationTestSuite):
    pass


# --- the bugs of the subprocess-per-trial launchers, each through the real command line ---------------------


def trial_dirs(sweep_dir: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sorted(sweep_dir.glob("*/trial.json"))}


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "trial.json").read_text())


def test_a_pool_trial_is_hydras_job(tmp_path: Path) -> None:
    """Hydra's job identity, the sweep's hydra.* overrides and an override_dirname subdir (with '=' and ',') reach
    every trial of `cnnlab train -m launcher=pool`, and the trial's overrides are the ones typed."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli("train", "-m", "launcher=pool", "hydra.launcher.slots=2", *QUICK, "trainer.max_epochs=1",
                     "model=linear", "hydra.job.chdir=true",
                     "hydra.sweep.subdir=${hydra.job.override_dirname}",
                     "hydra.job.config.override_dirname.exclude_keys=[launcher,trainer.max_epochs,"
                     "trainer.enable_model_summary,model,seed]",
                     "data.batch_size=32", "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    names = ["data.batch_size=32,optimizer.lr=0.01", "data.batch_size=32,optimizer.lr=0.02"]
    assert sorted(trial_dirs(sweep_dir)) == names
    from omegaconf import OmegaConf

    for num, name in enumerate(names):
        run_dir = sweep_dir / name
        assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
        hydra_cfg = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
        assert hydra_cfg.job.num == num and hydra_cfg.job.id == f"train_{num}" and hydra_cfg.mode == "MULTIRUN"
        assert hydra_cfg.job.chdir is True and hydra_cfg.runtime.output_dir == str(run_dir)
        overrides = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
        assert not any(o.startswith("group=") for o in overrides), overrides
        assert f"optimizer.lr=0.0{num + 1}" in overrides
        assert record(run_dir)["status"] == "COMPLETED"


def test_the_seed_can_be_the_trials_job_number(tmp_path: Path) -> None:
    result = run_cli("train", "-m", "launcher=pool", "hydra.launcher.slots=2", *QUICK, "trainer.max_epochs=1",
                     "model=linear", "seed=${hydra:job.num}", "optimizer.lr=0.01,0.02",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for num in (0, 1):
        assert record(tmp_path / "sweep" / str(num))["return_value"]["status"] == "completed"
        saved = torch.load(tmp_path / "sweep" / str(num) / "checkpoints" / "last.ckpt", weights_only=True)
        assert saved["cnnlab_config"]["seed"] == num  # the run was seeded with its job number


def test_rerunning_a_pool_sweep_skips_completed_trials_and_continues_an_interrupted_one(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep = ("train", "-m", "launcher=pool", "hydra.launcher.slots=2", *QUICK, "trainer.max_epochs=1",
             "model=linear", "seed=1,2", f"hydra.sweep.dir={sweep_dir}")
    first = run_cli(*sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    completed, interrupted = sweep_dir / "0", sweep_dir / "1"
    before = (completed / "results.json").stat().st_mtime_ns
    # trial 1 as a Ctrl-C or a kill leaves it: its job never returned, its run stopped after a checkpoint
    results = json.loads((interrupted / "results.json").read_text())
    results["status"] = "interrupted"
    (interrupted / "results.json").write_text(json.dumps(results))
    (interrupted / "trial.json").write_text(json.dumps({**record(interrupted), "status": "RUNNING"}))

    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "#0 already completed, skipped" in again.stdout + again.stderr
    assert (completed / "results.json").stat().st_mtime_ns == before
    continued = json.loads((interrupted / "results.json").read_text())
    assert continued["status"] == "completed" and len(continued["segments"]) == 2  # resumed, not started over
    assert record(interrupted)["status"] == "COMPLETED"


APP = textwrap.dedent("""\
    import os, signal, time
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base=None, config_path=None)
    def app(cfg):
        if cfg.get("crash"):
            os._exit(3)
        time.sleep(cfg.get("sleep", 0))
        return {"num": HydraConfig.get().job.num, "pid": os.getpid(), "cwd": os.getcwd()}

    if __name__ == "__main__":
        app()
    """)


def run_app(tmp_path: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    (tmp_path / "app.py").write_text(APP)
    return subprocess.run([sys.executable, "app.py", "-m", "hydra/launcher=pool", "hydra.launcher.gpus=[]",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_a_trial_that_kills_its_worker_fails_alone_and_the_slot_gets_a_fresh_worker(tmp_path: Path) -> None:
    result = run_app(tmp_path, "hydra.launcher.slots=1", "+crash=true,false,false",
                     "+hydra.callbacks.log_return._target_=hydra.experimental.callbacks.LogJobReturnCallback")
    sweep_dir = tmp_path / "sweep"
    crashed, after = record(sweep_dir / "0"), [record(sweep_dir / str(n)) for n in (1, 2)]
    assert crashed["status"] == "FAILED" and str(sweep_dir / "0") in crashed["error"]
    assert "exited with code 3" in crashed["error"] and "ended_at" in crashed
    assert [r["status"] for r in after] == ["COMPLETED", "COMPLETED"]  # the next trials still ran ...
    assert after[0]["pid"] != crashed["pid"] and after[0]["pid"] == after[1]["pid"]  # ... on one fresh worker
    assert [r["return_value"]["num"] for r in after] == [1, 2]
    assert "Succeeded with return value" in (sweep_dir / "1" / "app.log").read_text()  # Hydra callbacks ran
    assert result.returncode != 0 and "exited with code 3" in result.stderr  # Hydra's sweeper reports the failure


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _interruptible() -> None:
    """In the sweep's process, before it starts: Ctrl-C's default action. A shell starts background jobs with
    SIGINT ignored, and a CI run started as one passes that on to every process it starts; Python then keeps
    ignoring it, and the sweep would never see the Ctrl-C this test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_running_trials(sweep_dir: Path, count: int, proc: subprocess.Popen) -> list[int]:
    import time

    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        pids = [r["pid"] for r in map(record, trial_dirs(sweep_dir).values()) if r["status"] == "RUNNING"]
        if len(pids) >= count:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"{count} trials never ran at once")


@pytest.mark.parametrize("how", ["ctrl-c", "kill", "trials-interrupted"])
def test_stopping_a_pool_sweep_leaves_no_worker_behind(tmp_path: Path, how: str) -> None:
    import signal
    import time

    (tmp_path / "app.py").write_text(APP)
    proc = subprocess.Popen([sys.executable, "app.py", "-m", "hydra/launcher=pool", "hydra.launcher.gpus=[]",
                             "hydra.launcher.slots=2", "+sleep=600", "+n=1,2,3",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_interruptible)
    try:
        workers = _wait_for_running_trials(tmp_path / "sweep", 2, proc)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
        elif how == "kill":
            os.kill(proc.pid, signal.SIGKILL)  # the sweep alone, killed outright
        else:  # the trials stop (KeyboardInterrupt in the task), the sweep's own process gets no signal
            for pid in workers:
                os.kill(pid, signal.SIGINT)
        proc.wait(timeout=30)
        if how != "kill":
            assert proc.returncode != 0
        deadline = time.time() + 15
        while time.time() < deadline and not all(map(_gone, workers)):
            time.sleep(0.2)
        assert all(map(_gone, workers)), workers
        assert not (tmp_path / "sweep" / "2").exists()  # no trial started after the stop
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_ddp_trains_inside_a_pool_trial(tmp_path: Path) -> None:
    """Lightning's DDP starts a trial's second process by running the worker's command line again: that command
    runs exactly this trial, in its own folder (gloo on the CPU: 2 processes)."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli("train", "-m", "launcher=pool", "hydra.launcher.slots=1", "trainer=ddp", "trainer.devices=2",
                     "trainer.accelerator=cpu", "trainer.precision=32-true", *QUICK, "trainer.max_epochs=1",
                     "model=linear", "seed=1,2", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for num in ("0", "1"):  # the second trial runs after a DDP trial on the same slot
        run_dir = sweep_dir / num
        assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
        assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran this trial, in this folder
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_dir / "train_ddp_process_1.log").read_text()
        assert record(run_dir)["status"] == "COMPLETED"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no stray run folder from rank 1


@pytest.mark.slow
def test_ddp_trains_inside_a_ray_trial(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    sweep_dir = tmp_path / "sweep"
    result = run_cli("train", "-m", "launcher=ray", "hydra.launcher.num_cpus=2", "hydra.launcher.cpus_per_trial=2",
                     "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.precision=32-true",
                     *QUICK, "trainer.max_epochs=1", "model=linear", "seed=1", f"hydra.sweep.dir={sweep_dir}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = sweep_dir / "0"
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_dir / "train_ddp_process_1.log").read_text()
    assert record(run_dir)["status"] == "COMPLETED" and record(run_dir)["placement"]["threads"] == 2


@pytest.mark.slow
def test_rerunning_a_ray_sweep_returns_the_completed_trials_stored_results(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    (tmp_path / "app.py").write_text(APP)
    command = [sys.executable, "app.py", "-m", "hydra/launcher=cnnlab_ray", "hydra.launcher.num_cpus=2",
               "hydra.launcher.resume=true", "+n=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    before = [record(tmp_path / "sweep" / str(n)) for n in (0, 1)]
    assert [r["placement"]["gpus"] for r in before] == [[], []] and all(r["placement"]["node"] for r in before)
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "#0 already completed, skipped" in log and "#1 already completed, skipped" in log
    assert "Started a local Ray instance" not in log  # nothing to run: no Ray
    assert [record(tmp_path / "sweep" / str(n)) for n in (0, 1)] == before
