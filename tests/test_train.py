"""``cnnlab train`` and ``cnnlab eval`` end to end, as a user runs them: files written, accuracy, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUICK, SHARED_DATA, results_of, run_cli, run_dir_of

RESULT_KEYS = {"status", "test/acc", "test/acc_top5", "val/acc_best", "epochs", "train_time_s", "params",
               "started_at", "finished_at", "overrides", "run_dir", "git"}


def test_default_run_fulfils_the_run_contract(trained_digits_run: Path) -> None:
    run_dir = trained_digits_run
    results = results_of(run_dir)
    assert RESULT_KEYS <= set(results)
    assert results["status"] == "completed" and results["error"] is None
    assert results["run_dir"] == str(run_dir) and results["epochs"] == 4 and results["params"] == 61_848  # LeNet-5 with batch norm
    assert 0.0 <= results["test/acc"] <= results["test/acc_top5"] <= 1.0
    assert results["git"]["commit"]
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv", "curves.png", "train.log",
                 "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert len(list((run_dir / "checkpoints").glob("epoch*.ckpt"))) == 1


def test_default_run_learns(trained_digits_run: Path) -> None:
    """Validation accuracy rises over the epochs, and the test accuracy is far above chance (0.1)."""
    with open(trained_digits_run / "metrics.csv") as f:
        val_acc = [float(row["val/acc"]) for row in csv.DictReader(f) if row.get("val/acc")]
    assert len(val_acc) == 4 and val_acc[-1] > val_acc[0]
    assert results_of(trained_digits_run)["test/acc"] > 0.8


def test_eval_reproduces_the_test_metrics(trained_digits_run: Path, tmp_path: Path) -> None:
    results = results_of(trained_digits_run)
    best = results["best_checkpoint"]
    evaluated = run_cli("eval", f"ckpt_path={best}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = json.loads((trained_digits_run / f"eval-{Path(best).stem}.json").read_text())
    assert again["test/acc"] == pytest.approx(results["test/acc"], abs=1e-6)
    assert again["test/acc_top5"] == pytest.approx(results["test/acc_top5"], abs=1e-6)
    assert "test/acc" in evaluated.stdout


def test_eval_of_a_missing_checkpoint_is_explained(tmp_path: Path) -> None:
    result = run_cli("eval", "ckpt_path=nowhere.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "No checkpoint at nowhere.ckpt" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_command_reaches_95_percent(tmp_path: Path) -> None:
    """The README's first command: `cnnlab train` on the built-in digits default."""
    result = run_cli("train", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert results_of(run_dir_of(result))["test/acc"] >= 0.95


def test_divergence_stops_the_run_and_keeps_checkpoints(tmp_path: Path) -> None:
    # Epoch 0 trains normally and is checkpointed; then the rate jumps a millionfold and the loss blows up.
    result = run_cli("train", *QUICK, "trainer.max_epochs=4", "optimizer=sgd", "optimizer.lr=0.01",
                     "scheduler=multistep", "scheduler.milestones=[1]", "scheduler.gamma=1e6", cwd=tmp_path)
    assert result.returncode == 1
    assert "Training diverged" in result.stderr and "Lower optimizer.lr" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    run_dir = run_dir_of(result)
    results = results_of(run_dir)
    assert results["status"] == "diverged" and "Training diverged" in results["error"]
    assert list((run_dir / "checkpoints").glob("epoch000-*.ckpt"))


def test_lightnings_profiler_is_one_override_away(tmp_path: Path) -> None:
    result = run_cli("train", *QUICK, "trainer.profiler=simple", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    assert "Profiler Report" in report and "run_training_batch" in report


def test_missing_dataset_fails_cleanly(tmp_path: Path) -> None:
    result = run_cli("train", "data=mnist", f"data.root={tmp_path / 'nothing'}", "data.download=false", cwd=tmp_path)
    assert result.returncode == 1
    assert "Dataset 'mnist' not found" in result.stderr and "train-images-idx3-ubyte" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # one paragraph and nothing else: no leak reports from native extensions as the interpreter tears down
    assert result.stderr.startswith("cnnlab train: error:") and result.stderr.strip().count("\n") == 0
    assert results_of(run_dir_of(result))["status"] == "failed"


@pytest.mark.parametrize(
    ("override", "message"),
    [("model=lenet6", "Valid options for model"), ("optimizer.lrr=0.1", "Did you mean optimizer.lr=0.1?"),
     ("data.batch_size=abc", "must be an integer"),
     ("trainer.profiler=simpel", "Unknown trainer.profiler 'simpel'. Lightning's profilers: simple, advanced")],
)
def test_cli_config_errors(override: str, message: str, tmp_path: Path) -> None:
    result = run_cli("train", override, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_multirun_sweeps_and_survives_a_failed_trial(tmp_path: Path) -> None:
    result = run_cli("train", "-m", *QUICK, "trainer.max_epochs=1", "model=mlp", "model.depth=1,2",
                     "data.batch_size=64", "optimizer=sgd", "optimizer.lr=0.05,1e9", cwd=tmp_path)
    assert result.returncode == 1  # one diverging trial fails the command, after every trial has run
    runs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/*/results.json"))
    statuses = sorted(json.loads(p.read_text())["status"] for p in runs)
    assert len(runs) == 4 and statuses.count("completed") >= 2
    assert "not completed:" in result.stderr and "(diverged)" in result.stderr


def test_runs_started_together_get_distinct_dirs(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cnnlab", "train", *QUICK, "trainer.max_epochs=1", "model=linear"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(2)]
    dirs = {proc.communicate(timeout=300)[0].strip().splitlines()[-1] for proc in procs}
    assert len(dirs) == 2 and all(Path(d, "results.json").is_file() for d in dirs)


def test_wandb_logs_offline_without_a_key(tmp_path: Path) -> None:
    result = run_cli("train", *QUICK, "logger=[csv,wandb]", "tags=[ci]", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(result)
    results = results_of(run_dir)
    assert results["wandb_sync"].startswith("wandb sync ") and "wandb sync" in result.stdout
    offline_runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline_runs) == 1
    log = offline_runs[0].read_bytes()  # W&B's transaction log: protobuf records, values as JSON text
    assert json.dumps(results["test/acc"]).encode() in log
    assert b"val/acc" in log and b"best.ckpt" in log and b"optimizer" in log


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs the shared MNIST copy")
def test_lenet5_mnist_recipe_reaches_99_percent(tmp_path: Path) -> None:
    result = run_cli("train", "experiment=lenet5_mnist", f"data.root={SHARED_DATA}",
                     "trainer.enable_model_summary=false", cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(run_dir_of(result))
    assert results["epochs"] <= 5 and results["test/acc"] >= 0.990
