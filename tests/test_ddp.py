"""Distributed data parallel for real, on the CPU: Lightning starts a second process (gloo) for every run, which
must run exactly that run again — a single run and each job of a sweep — and one results.json reports metrics
reduced over both processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import QUICK, results_of, run_cli, run_dir_of

DDP = ("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=1")


def _trained_on_two_processes(run_dir: Path) -> None:
    results = results_of(run_dir)
    assert results["status"] == "completed", results.get("error")
    # Hydra's log of the second process, which Lightning started with this run's folder
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert not list(run_dir.glob("*/results.json"))  # the second process wrote no run of its own


def test_a_ddp_run_trains_on_two_processes_and_reports_reduced_metrics(tmp_path: Path) -> None:
    result = run_cli("train", *QUICK, *DDP, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(result)
    _trained_on_two_processes(run_dir)
    assert result.stdout.count(str(run_dir)) == 1  # one report, by rank 0
    # The test metrics cover both halves of the test set: one process re-testing the same checkpoint agrees.
    best = results_of(run_dir)["best_checkpoint"]
    alone = run_cli("eval", f"ckpt_path={best}", "trainer.strategy=auto", "trainer.devices=1", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    evaluated = {line.split()[0]: float(line.split()[1]) for line in alone.stdout.splitlines()
                 if line.strip().startswith("test/acc ")}
    assert evaluated["test/acc"] == pytest.approx(results_of(run_dir)["test/acc"], abs=1e-6)


def test_every_job_of_a_ddp_sweep_runs_itself_on_two_processes(tmp_path: Path) -> None:
    result = run_cli("train", "-m", *QUICK, *DDP, "seed=1,2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        _trained_on_two_processes(tmp_path / "sweep" / job)
    assert [results_of(tmp_path / "sweep" / job)["overrides"][-1] for job in ("0", "1")] == ["seed=1", "seed=2"]
