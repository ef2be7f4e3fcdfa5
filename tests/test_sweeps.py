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
    assert result.returncode == 1, result.stderr[-2000:]  # non-zero because a trial diverged ...
    outcome = trials(sweep_dir)
    assert sorted(r["status"] for r in outcome.values()) == ["completed"] * 3 + ["diverged"]
    diverged = next(r for r in outcome.values() if r["status"] == "diverged")
    assert "optimizer.lr=1000000000.0" in diverged["overrides"] and "diverged" in diverged["error"]  # Hydra's 1e9
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
    # chosen on validation (the lowest best-epoch validation loss), whatever the test split says
    assert best["status"] == "completed" and float(best["val/loss_best"]) == min(
        float(r["val/loss_best"]) for r in rows if r["val/loss_best"])
    assert sorted(float(r["optimizer.lr"]) for r in rows) == [0.01, 0.05, 0.1, 1e9]
    markdown = (sweep_dir / "summary.md").read_text()
    assert "4 trials: 3 completed, 1 diverged" in markdown and "## Trials that did not complete" in markdown
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
    assert rerun == {name for name, status in statuses.items() if status != "completed"}  # only the diverged one
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
            "val/acc_best": acc, "history": [{"epoch": 1, "val/acc": acc - 0.1, "val/loss": 2 - acc},
                                             {"epoch": 2, "val/acc": acc, "val/loss": 1 - acc}]}))
    summary = summarize_sweep(tmp_path)
    assert summary.axes == ["model.depth", "seed"] and summary.best.results["test/acc"] == 0.97
    markdown = (tmp_path / "summary.md").read_text()
    # val/loss_best, val/acc_best, test/acc
    assert "| model.depth=2 | 2 | 0.0400 ± 0.0141 | 0.9600 ± 0.0141 | 0.9600 ± 0.0141 |" in markdown
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
    assert trials[2].params == interrupted.params  # ... and the interrupted one was asked again first,
    assert trials[2].user_attrs["job_num"] == 1  # in its own folder: no stale trial is left "running"
    assert json.loads((sweep_dir / "1" / "results.json").read_text())["status"] == "completed"
    assert not (sweep_dir / "2").exists()
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


# ------------------------------------------------------------------------ honest outcomes, selection, plots


def fake_trial(sweep_dir: Path, num: int, overrides: list[str], status: str = "completed",
               val_loss: list[float] | None = None, val_acc: list[float] | None = None, **fields) -> Path:
    """A trial folder as a sweep leaves it, with a hand-written results.json."""
    run = sweep_dir / str(num)
    run.mkdir(parents=True)
    val_loss = val_loss or []
    val_acc = val_acc or [0.5] * len(val_loss)
    history = [{"epoch": e + 1, "val/loss": loss, "val/acc": acc} for e, (loss, acc) in enumerate(zip(val_loss,
                                                                                                       val_acc))]
    results = {"status": status, "overrides": overrides, "history": history, "epochs": len(history), **fields}
    if status == "completed":
        results.setdefault("val/acc_best", max(val_acc) if val_acc else None)
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_a_sweep_whose_every_trial_fails_writes_its_summary_and_exits_non_zero(tmp_path: Path) -> None:
    """README's degradation sweep without CIFAR on disk: four failed trials, an error table, exit 1."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli("train", "-m", "experiment=resnet20_cifar10,plain20_cifar10", "model.depth=20,32",
                     f"data.root={tmp_path / 'nothing'}", "data.download=false", f"hydra.sweep.dir={sweep_dir}",
                     cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "IndexError" not in result.stderr and "raised" not in result.stderr  # no callback warning
    assert [r["status"] for r in trials(sweep_dir).values()] == ["failed"] * 4
    markdown = (sweep_dir / "summary.md").read_text()
    assert "4 trials: 4 failed." in markdown and "No trial completed" in markdown
    errors = markdown.split("## Trials that did not complete")[1]
    assert errors.count("| failed |") == 4 and errors.count("not found") == 4
    assert "| 3 | failed | experiment=plain20_cifar10 model.depth=32 |" in errors
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and not any(r["best"] for r in rows) and all("not found" in r["error"] for r in rows)
    assert str(sweep_dir / "summary.md") in result.stdout and str(sweep_dir / "3") in result.stderr


def test_sweep_summary_of_a_folder_without_trials_says_so_and_writes_nothing(tmp_path: Path) -> None:
    single_run = tmp_path / "run"  # a single run's folder is not a sweep: no trial folders in it
    (single_run / ".hydra").mkdir(parents=True)
    (single_run / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (single_run / "checkpoints").mkdir()
    (single_run / "results.json").write_text(json.dumps({"status": "completed", "test/acc": 0.9}))
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (single_run, empty):
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        result = run_cli("sweep-summary", str(folder), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert f"{folder} holds no sweep trials" in result.stderr and "nothing was written" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_the_best_trial_is_chosen_on_validation_and_test_is_only_reported(tmp_path: Path) -> None:
    from cnnlab.sweeps.summary import summarize_sweep

    # trial 0: the lower validation loss, the worse test accuracy; trial 1 the other way round
    fake_trial(tmp_path, 0, ["optimizer.lr=0.01"], val_loss=[0.9, 0.30, 0.35], val_acc=[0.6, 0.90, 0.89],
               **{"test/acc": 0.80})
    fake_trial(tmp_path, 1, ["optimizer.lr=0.1"], val_loss=[0.8, 0.40], val_acc=[0.7, 0.95], **{"test/acc": 0.99})
    fake_trial(tmp_path, 2, ["optimizer.lr=1"], status="diverged", val_loss=[50.0], error="Training diverged")
    summary = summarize_sweep(tmp_path)
    assert summary.best.run_dir.name == "0"  # by val/loss (the default selection), not by test/acc
    with open(tmp_path / "summary.csv") as f:
        rows = {r["trial"]: r for r in csv.DictReader(f)}
    assert rows["0"]["best"] == "*" and rows["1"]["best"] == "" and float(rows["0"]["val/loss_best"]) == 0.30
    assert rows["1"]["test/acc"] == "0.99"  # reported beside it
    markdown = (tmp_path / "summary.md").read_text()
    assert "**Best by validation, val/loss (lowest):** trial 0 (optimizer.lr=0.01), val/loss_best 0.3000" in markdown
    assert "test/acc 0.8000 is reported, not used to choose" in markdown
    assert "| 0 | **best** | completed | 0.01 | 0.3000 |" in markdown

    # the sweep's own `selection` (its multirun.yaml) decides the metric and its direction
    (tmp_path / "multirun.yaml").write_text("selection:\n  metric: val/acc\n  mode: max\n")
    summary = summarize_sweep(tmp_path)
    assert summary.best.run_dir.name == "1" and "**Best by validation, val/acc (highest):** trial 1" in (
        tmp_path / "summary.md").read_text()


def test_one_selection_setting_drives_checkpoint_sweeper_and_summary() -> None:
    from cnnlab import compose_config
    from cnnlab.errors import ConfigError
    from hydra_plugins.cnnlab_sweeps.optuna_sweeper import trial_value

    cfg = compose_config(["callbacks=[default,early_stopping]"])
    assert (cfg.selection.metric, cfg.selection.mode) == ("val/loss", "min")
    for callback in ("model_checkpoint", "early_stopping"):
        assert (cfg.callbacks[callback].monitor, cfg.callbacks[callback].mode) == ("val/loss", "min")
    cfg = compose_config(["selection.metric=val/acc", "selection.mode=max"])
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/acc", "max")
    with pytest.raises(ConfigError, match="test split is measured and reported, never used to choose"):
        compose_config(["selection.metric=test/acc", "selection.mode=max"])
    with pytest.raises(ConfigError, match="Set selection.mode=max"):
        compose_config(["selection.metric=val/acc"])
    # what an Optuna trial scores: the best epoch of the metric, only for a completed run
    results = {"status": "completed", "val/acc_best": 0.9, "test/acc": 0.99,
               "history": [{"val/loss": 0.5}, {"val/loss": 0.3}, {"val/loss": 0.4}]}
    assert trial_value(results, "val/loss", "minimize") == 0.3
    assert trial_value(results, "val/acc", "maximize") == 0.9
    assert trial_value({**results, "status": "diverged"}, "val/loss", "minimize") is None
    assert trial_value(0.25, "anything", "minimize") == 0.25


def test_optuna_sweeper_takes_its_objective_from_selection(monkeypatch) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnlab.config import builtin_config_dir
    from cnnlab.config.compose import register
    from hydra_plugins.cnnlab_sweeps import optuna_sweeper

    class NoLaunchers:
        @staticmethod
        def instance() -> "NoLaunchers":
            return NoLaunchers()

        def instantiate_launcher(self, **kwargs) -> None:
            return None

    monkeypatch.setattr(optuna_sweeper, "Plugins", NoLaunchers)
    register()
    for overrides, expected in (([], ("val/loss", "minimize")),
                                (["selection.metric=val/acc", "selection.mode=max"], ("val/acc", "maximize"))):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(builtin_config_dir()), version_base="1.3"):
            cfg = compose("config", return_hydra_config=True, overrides=["sweep=optuna", *overrides])
        GlobalHydra.instance().clear()
        sweeper = optuna_sweeper.OptunaSweeper(**{k: v for k, v in cfg.hydra.sweeper.items() if k != "_target_"})
        sweeper.setup(hydra_context=None, task_function=None, config=cfg)
        assert (sweeper.metric, sweeper.direction) == expected


def captured_figures(monkeypatch) -> list:
    """Every figure saved while the test runs, kept open for inspection."""
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append((self, Path(args[0]).name))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def test_plots_have_integer_and_log_axes_titles_and_readable_legends(tmp_path: Path, monkeypatch) -> None:
    from cnnlab.sweeps.summary import summarize_sweep

    num = 0
    for depth in (20, 32, 44, 56):
        for lr in ("0.0012345678901234567", "0.1"):
            fake_trial(tmp_path, num, [f"model.depth={depth}", f"optimizer.lr={lr}", "data.batch_size=64"],
                       val_loss=[1.0, 0.5 + depth / 100], **{"test/acc": 0.9 - depth / 1000})
            num += 1
    fake_trial(tmp_path, num, ["model.depth=20", "optimizer.lr=1000000000.0", "data.batch_size=64"],
               status="diverged", val_loss=[1e12], error="Training diverged")
    figures = captured_figures(monkeypatch)
    summarize_sweep(tmp_path)
    by_name = {name: fig for fig, name in figures}
    assert set(by_name) == {"metric_vs_model.depth.png", "metric_vs_optimizer.lr.png", "val_curves.png"}
    sweep = "/".join(tmp_path.resolve().parts[-2:])
    for name, fig in by_name.items():
        title = fig._suptitle.get_text()
        assert f"Sweep {sweep}" in title and ("val/loss" in title or "validation" in title), (name, title)

    depth = by_name["metric_vs_model.depth.png"].axes[0]
    assert depth.get_xscale() == "linear"
    assert list(depth.get_xticks()) == [20, 32, 44, 56]
    assert [t.get_text() for t in depth.get_xticklabels()] == ["20", "32", "44", "56"]
    legend = [t.get_text() for t in by_name["metric_vs_model.depth.png"].legends[0].get_texts()]
    assert "optimizer.lr=0.001235" in legend and "optimizer.lr=0.1" in legend  # not 18 digits
    title = by_name["metric_vs_model.depth.png"]._suptitle.get_text()
    assert "did not complete: trial 8 (diverged)" in title  # not silently dropped

    lr = by_name["metric_vs_optimizer.lr.png"].axes[0]
    assert lr.get_xscale() == "log" and "log scale" in lr.get_xlabel()
    assert [t.get_text() for t in lr.get_xticklabels()] == ["0.001235", "0.1"]

    for ax in by_name["val_curves.png"].axes:  # epochs: whole numbers only
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    loss = by_name["val_curves.png"].axes[0]
    assert loss.get_ylim()[1] < 10  # the diverged trial's 1e12 does not flatten the others ...
    assert any("diverged" in t and "off scale" in t for t in
               (t.get_text() for t in by_name["val_curves.png"].legends[0].get_texts()))  # ... and says so


def test_batch_size_axes_double_and_categorical_axes_keep_their_names() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnlab.sweeps.summary import axis_scale

    scale = axis_scale("data.batch_size", ["128", "32", "64"])
    assert (scale.values, scale.integer, scale.log_base) == (["32", "64", "128"], True, 2)
    fig, ax = plt.subplots()
    ax.plot([32, 64, 128], [1, 2, 3])
    scale.apply(ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "64", "128"] and ax.get_xscale() == "log"
    plt.close(fig)
    assert axis_scale("experiment", ["resnet20_cifar10", "plain20_cifar10"]).numeric is False
    assert axis_scale("seed", ["1", "2", "3"]).log_base is None


def test_optuna_sweeps_get_optunas_own_views(tmp_path: Path, monkeypatch) -> None:
    import optuna

    from cnnlab.sweeps.summary import summarize_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="cnnlab", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for number in range(6):
        trial = study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
                           "model.depth": optuna.distributions.CategoricalDistribution([1, 2, 4])})
        loss = abs(trial.params["optimizer.lr"] - 0.01) + trial.params["model.depth"] / 10
        study.tell(trial, loss)
        fake_trial(tmp_path, number, [f"optimizer.lr={trial.params['optimizer.lr']}",
                                      f"model.depth={trial.params['model.depth']}"], val_loss=[loss + 1, loss],
                   **{"test/acc": 0.9})
    figures = captured_figures(monkeypatch)
    summarize_sweep(tmp_path)
    names = {name for _, name in figures}
    assert {"optuna_history.png", "optuna_importances.png", "optuna_slice.png", "val_curves.png"} <= names
    assert not any(name.startswith("metric_vs_") for name in names)  # no one-point lines per value
    for fig, name in figures:
        assert "Sweep" in fig._suptitle.get_text() and "val/loss" in fig._suptitle.get_text(), name
    markdown = (tmp_path / "summary.md").read_text()
    assert "0.1234567" not in markdown.split("## ")[0].replace("val/loss", "")  # values shown to 4 digits


def test_a_fixed_key_beside_a_swept_group_is_explained(tmp_path: Path) -> None:
    result = run_cli("train", "-m", "experiment=resnet20_cifar10,plain20_cifar10", "model.depth=20", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "To append to your config use +model.depth=20" not in result.stderr  # Hydra's wrong advice
    message = result.stderr
    assert "applies to every trial, that is to every option of experiment" in message
    assert "model is lenet5_bn (its default), which has no depth" in message
    assert "Write it ++model.depth=20" in message and not (tmp_path / "outputs").exists()

    result = run_cli("train", "-m", "model=mlp,linear", "model.width=32", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "model.width=32 is fixed on a sweep's command line, so it applies to every trial" in result.stderr
    assert "model=linear has no model.width" in result.stderr and "+model.width" not in result.stderr
    assert "cnnlab train -m model=mlp model.width=32, then cnnlab train -m model=linear." in result.stderr


@pytest.mark.slow
def test_the_advised_command_line_runs(tmp_path: Path) -> None:
    """++ as advised: every trial of both options gets the depth, and the sweep composes."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli("train", "-m", "model=mlp,resnet_cifar", "++model.depth=20", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                     "trainer.enable_model_summary=false", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = trials(sweep_dir)
    assert [r["status"] for r in outcome.values()] == ["completed", "completed"]


def test_curves_title_names_model_data_and_test_accuracy(tmp_path: Path, monkeypatch) -> None:
    from cnnlab.record import plot_curves

    figures = captured_figures(monkeypatch)
    rows = [{"epoch": e, "train/loss": 1.0 / e, "val/loss": 1.2 / e, "train/acc": 0.5 + e / 10,
             "val/acc": 0.45 + e / 10} for e in (1, 2, 3)]
    run = tmp_path / "10-41-05_4321"
    run.mkdir()
    plot_curves(rows, run / "curves.png", title="lenet5_bn on digits",
                results={"status": "completed", "test/acc": 0.97123, "test/acc_top5": 0.999,
                         "best_checkpoint": str(run / "checkpoints" / "epoch001-val_loss0.6000.ckpt")})
    fig, _ = figures[-1]
    assert fig._suptitle.get_text() == "lenet5_bn on digits: test/acc 0.9712, top-5 0.9990  (10-41-05_4321)"
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()][-1] == "tested checkpoint (epoch 2)"
        assert all(float(t).is_integer() for t in ax.get_xticks())

    exploded = [{"epoch": 1, "train/loss": 2.3, "val/loss": 2.3}, {"epoch": 2, "train/loss": 4e9, "val/loss": 5e9}]
    plot_curves(exploded, run / "curves.png", title="mlp on digits",
                results={"status": "diverged", "error": "Training diverged"})
    fig, _ = figures[-1]
    assert fig._suptitle.get_text() == "mlp on digits: diverged, not tested  (10-41-05_4321)"
    assert fig.axes[0].get_yscale() == "log"


def test_every_status_is_reported_with_what_to_do(tmp_path: Path) -> None:
    from cnnlab.sweeps.summary import summarize_sweep

    fake_trial(tmp_path, 0, ["seed=0"], val_loss=[0.5, 0.4], **{"test/acc": 0.9})
    fake_trial(tmp_path, 1, ["seed=1"], status="interrupted", val_loss=[0.6], interrupted_by="SIGINT",
               resume_command=f"cnnlab resume {tmp_path / '1'}")
    crashed = fake_trial(tmp_path, 2, ["seed=2"], status="running")  # its worker died (os._exit, out of memory)
    (crashed / "trial.json").write_text(json.dumps({"overrides": ["seed=2"], "status": "FAILED",
                                                    "error": "WorkerDied: the worker exited with status 137"}))
    (tmp_path / "3").mkdir()  # launched, nothing written yet
    (tmp_path / "3" / "trial.json").write_text(json.dumps({"overrides": ["seed=3"], "status": "RUNNING"}))
    (tmp_path / "4" / ".hydra").mkdir(parents=True)  # a basic-launcher job that had just started
    (tmp_path / "4" / ".hydra" / "overrides.yaml").write_text("- seed=4\n")
    fake_trial(tmp_path, 5, ["seed=5"], status="running")  # killed outright (SIGKILL)
    summary = summarize_sweep(tmp_path)
    assert [t.status for t in summary.trials] == ["completed", "interrupted", "failed", "unfinished", "unfinished",
                                                  "running"]
    assert summary.outcome == "6 trials: 1 completed, 1 failed, 1 interrupted, 1 running, 2 unfinished"
    assert summary.exit_status == 1 and summary.best.run_dir.name == "0"
    errors = (tmp_path / "summary.md").read_text().split("## Trials that did not complete")[1]
    assert f"| 1 | interrupted | seed=1 | interrupted by SIGINT; continue it with: cnnlab resume {tmp_path / '1'} |" \
        in errors
    assert "| 2 | failed | seed=2 | the trial's process died: WorkerDied: the worker exited with status 137 |" in errors
    assert "| 3 | unfinished | seed=3 | no results.json" in errors and "| 4 | unfinished | seed=4 |" in errors
    assert "| 5 | running | seed=5 | still running, or its process was killed" in errors
