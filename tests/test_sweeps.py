"""Sweeps with the pool launcher: concurrency, placement, failure isolation, resume, aggregation."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from conftest import QUICK, run_cli

SWEEP = ("-m", "launcher=pool", "hydra.launcher.slots=2", *QUICK, "model=mlp", "model.width=32", "optimizer=sgd",
         "scheduler=none")


def trials(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))}


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    cwd = tmp_path_factory.mktemp("pool")
    sweep_dir = cwd / "sweep"
    # lr=1e9 diverges: that trial must fail on its own while the other three complete
    result = run_cli("train", *SWEEP, "optimizer.lr=0.01,0.05,0.1,1e9", f"hydra.sweep.dir={sweep_dir}", cwd=cwd)
    return sweep_dir, result


def test_pool_sweep_isolates_the_failed_trial(pool_sweep) -> None:
    sweep_dir, result = pool_sweep
    assert result.returncode == 1, result.stderr[-2000:]  # non-zero because a trial failed ...
    outcome = trials(sweep_dir)
    assert sorted(r["status"] for r in outcome.values()) == ["completed"] * 3 + ["failed"]
    failed = next(r for r in outcome.values() if r["status"] == "failed")
    assert "optimizer.lr=1000000000.0" in failed["overrides"] and "diverged" in failed["error"]  # Hydra's 1e9
    assert "summary.md" in result.stdout  # ... after the summary was written


def lifetimes(sweep_dir: Path) -> list[tuple[float, float, object]]:
    """(launched, ended, placement) of every trial process, from the launcher's trial.json."""
    markers = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/trial.json"))]
    return sorted((m["launched_at"], m["ended_at"], m["placement"]) for m in markers)


def test_pool_runs_trials_concurrently_on_split_threads(pool_sweep) -> None:
    sweep_dir, _ = pool_sweep
    spans = lifetimes(sweep_dir)
    assert len(spans) == 4
    assert spans[1][0] < spans[0][1], spans  # the second trial started while the first was running
    assert max(sum(s[0] <= t[0] < s[1] for s in spans) for t in spans) <= 2  # never more than 2 slots busy
    assert {r["torch_threads"] for r in trials(sweep_dir).values()} == {1}  # 2 cores shared by 2 slots


def test_sweep_summary_tables_and_plots(pool_sweep) -> None:
    sweep_dir, _ = pool_sweep
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and [r["best"] for r in rows].count("*") == 1
    best = next(r for r in rows if r["best"] == "*")
    assert best["status"] == "completed" and float(best["test/acc"]) == max(
        float(r["test/acc"]) for r in rows if r["test/acc"])
    assert sorted(float(r["optimizer.lr"]) for r in rows) == [0.01, 0.05, 0.1, 1e9]
    markdown = (sweep_dir / "summary.md").read_text()
    assert "3 completed, 1 failed" in markdown and "## Failures" in markdown
    for plot in ("metric_vs_optimizer.lr.png", "val_curves.png"):
        assert (sweep_dir / plot).stat().st_size > 1000


def test_rerunning_the_sweep_resumes_it(pool_sweep, tmp_path: Path) -> None:
    sweep_dir, _ = pool_sweep
    before = {name: (sweep_dir / name / "results.json").stat().st_mtime_ns for name in trials(sweep_dir)}
    again = run_cli("train", *SWEEP, "optimizer.lr=0.01,0.05,0.1,1e9", f"hydra.sweep.dir={sweep_dir}",
                    cwd=sweep_dir.parent)
    after = {name: (sweep_dir / name / "results.json").stat().st_mtime_ns for name in trials(sweep_dir)}
    statuses = {name: r["status"] for name, r in trials(sweep_dir).items()}
    rerun = {name for name in before if after[name] != before[name]}
    assert rerun == {name for name, status in statuses.items() if status == "failed"}  # only the failed one
    assert "already completed, skipped" in again.stdout + again.stderr


def test_sweep_summary_command(pool_sweep, tmp_path: Path) -> None:
    sweep_dir, _ = pool_sweep
    (sweep_dir / "summary.md").unlink()
    result = run_cli("sweep-summary", str(sweep_dir), cwd=tmp_path)
    assert result.returncode == 1  # the sweep has a failed trial
    assert "| trial | best | status | optimizer.lr |" in result.stdout and (sweep_dir / "summary.md").is_file()


def test_explicit_gpu_list_pins_each_concurrent_trial(tmp_path: Path) -> None:
    """Placement is testable without GPUs: the trials train on the CPU but see their assigned devices."""
    result = run_cli("train", "-m", "launcher=pool", "hydra.launcher.gpus=[0,1]", *QUICK, "trainer.max_epochs=1",
                     "model=linear", "seed=1,2,3,4", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = trials(tmp_path / "sweep")
    assert len(outcome) == 4 and {r["devices"] for r in outcome.values()} == {"0", "1"}
    spans = lifetimes(tmp_path / "sweep")
    assert spans[1][0] < spans[0][1]  # two trials at once ...
    for i, (start_a, end_a, gpus_a) in enumerate(spans):
        for start_b, end_b, gpus_b in spans[i + 1:]:
            if start_b < end_a:  # ... and trials alive at the same time never share a GPU
                assert gpus_a != gpus_b
    assert "GPUs 0" in result.stdout + result.stderr and "GPUs 1" in result.stdout + result.stderr


def test_seed_sweeps_report_mean_and_std(tmp_path: Path) -> None:
    from cnnlab.sweeps.summary import summarize_sweep

    for num, (depth, seed, acc) in enumerate([(1, 0, 0.90), (1, 1, 0.92), (2, 0, 0.95), (2, 1, 0.97)]):
        run = tmp_path / str(num)
        run.mkdir()
        (run / "results.json").write_text(json.dumps({
            "status": "completed", "overrides": [f"model.depth={depth}", f"seed={seed}"], "test/acc": acc,
            "history": [{"epoch": 1, "val/acc": acc - 0.1}, {"epoch": 2, "val/acc": acc}]}))
    summary = summarize_sweep(tmp_path)
    assert summary.axes == ["model.depth", "seed"] and summary.best.results["test/acc"] == 0.97
    markdown = (tmp_path / "summary.md").read_text()
    assert "| model.depth=2 | 2 | 0.9600 ± 0.0141" in markdown
    assert (tmp_path / "metric_vs_model.depth.png").is_file()


def test_search_space_syntax() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.cnnlab_sweeps.optuna_sweeper import distribution

    parse = OverridesParser.create().parse_override
    assert distribution(parse("optimizer.lr=tag(log,interval(1e-4,0.1))")) == FloatDistribution(1e-4, 0.1, log=True)
    assert distribution(parse("data.batch_size=choice(32,64,128)")) == CategoricalDistribution([32, 64, 128])
    assert distribution(parse("model.depth=tag(int,interval(1,4))")) == IntDistribution(1, 4)
    assert distribution(parse("loss.label_smoothing=interval(0,0.2)")) == FloatDistribution(0.0, 0.2)


@pytest.mark.slow
def test_optuna_search_continues_after_a_kill(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna

    sweep_dir = tmp_path / "search"
    command = [sys.executable, "-m", "cnnlab", "train", "-m", "sweep=optuna", "hydra.sweeper.n_trials=4",
               "hydra.sweeper.n_jobs=1", *QUICK, "model=mlp", "model.width=32", "model.depth=choice(1,2)",
               f"hydra.sweep.dir={sweep_dir}"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 300
    while not (sweep_dir / "0" / "results.json").is_file() or not (sweep_dir / "1").is_dir():
        assert time.time() < deadline and first.poll() is None, "the search never reached its second trial"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # killed in the middle of trial 1
    first.wait()
    finished_before = (sweep_dir / "0" / "results.json").stat().st_mtime_ns
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    interrupted = optuna.load_study(study_name="cnnlab", storage=storage).trials[1]
    assert interrupted.state == optuna.trial.TrialState.RUNNING

    resumed = run_cli(*command[3:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Continuing study cnnlab: 1 of 4 trials already finished" in resumed.stdout + resumed.stderr
    trials = optuna.load_study(study_name="cnnlab", storage=storage).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and complete[0].number == 0  # trial 0 was not run again ...
    assert (sweep_dir / "0" / "results.json").stat().st_mtime_ns == finished_before
    assert trials[2].params == interrupted.params  # ... and the interrupted one was asked again first
    assert (sweep_dir / "optuna_best.yaml").is_file() and (sweep_dir / "summary.md").is_file()


def test_slurm_launcher_submits_one_job_per_trial_with_its_gpus(tmp_path: Path, monkeypatch) -> None:
    """The sbatch script hydra-submitit-launcher would submit for `launcher=slurm` with 2 nodes x 4 GPUs."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from cnnlab.config import builtin_config_dir
    from cnnlab.config.compose import register
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")  # submitit only checks that SLURM's tools exist
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(builtin_config_dir()), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True, overrides=[
            "launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
            "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4", "hydra.launcher.nodes=2",
            "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"])
    GlobalHydra.instance().clear()
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    # the parameter mapping of hydra_submitit_launcher.submitit_launcher.BaseSubmititLauncher.launch
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k if k in base else f"slurm_{k}": v for k, v in launcher.items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout")}
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "submitit")
    executor.update_parameters(**params)
    script = executor._executor._make_submission_file_text("python -m cnnlab train", "trial")
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=240"):
        assert line in script, script
    assert "srun" in script  # one process per task: what Lightning's SLURM environment expects for DDP


def test_submitit_local_executor_runs_the_trials(tmp_path: Path) -> None:
    result = run_cli("train", "-m", "launcher=submitit_local", *QUICK, "trainer.max_epochs=1", "model=linear",
                     "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["status"] for r in trials(tmp_path / "sweep").values()] == ["completed", "completed"]
    assert (tmp_path / "sweep" / "summary.md").is_file()


def test_ray_places_trials_on_a_local_cluster_with_two_cpu_slots(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    result = run_cli("train", "-m", "launcher=ray", "hydra.launcher.num_cpus=2", *QUICK, "trainer.max_epochs=1",
                     "model=linear", "seed=1,2,3", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = trials(tmp_path / "sweep")
    assert [r["status"] for r in outcome.values()] == ["completed"] * 3
    spans = lifetimes(tmp_path / "sweep")
    assert spans[1][0] < spans[0][1]  # two trials at once on the two CPU slots ...
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.5  # ... the third once a slot freed
    assert all(p["node"] and p["gpus"] == [] for _, _, p in spans)
