"""Runs a team can trust: interrupted, killed and pre-empted runs resume exactly; statuses say what happened;
checkpoints from elsewhere run no code. Every test drives the real CLI in its own process and stops it with real
signals."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import QUICK, results_of, run_cli, run_dir_of

# Small batches make an epoch of the digits set 81 steps long, so a signal lands inside an epoch.
SLOW_EPOCHS = ("trainer.deterministic=true", "data.batch_size=16", "trainer.enable_model_summary=false")
STEPS_PER_EPOCH = 81


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "cnnlab", "train", *args], cwd=tmp_path, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(process: subprocess.Popen, path: Path, after_step: int = 0) -> int:
    """Poll ``path`` until it holds a checkpoint taken after ``after_step`` inside an epoch; its global step."""
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if path.is_file():
            try:
                step = torch.load(path, map_location="cpu", weights_only=True)["global_step"]
            except Exception:  # noqa: BLE001 - a file being replaced: look again
                step = 0
            if step > after_step and step % STEPS_PER_EPOCH:
                return step
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint after step {after_step} appeared at {path}: {process.communicate()}")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_killed_mid_epoch_resumes_to_identical_weights_and_metrics(tmp_path: Path) -> None:
    """SIGKILL in the middle of an epoch, then `cnnlab resume`: the same final weights, test metrics, epoch
    history and metrics log as a run that was never stopped. The augmentation draws random crops and flips, so
    the data order and the random state must come back too."""
    args = (*SLOW_EPOCHS, "trainer.max_epochs=3", "augmentation=standard", "training.checkpoint_every_n_steps=20")
    whole = run_cli("train", *args, "hydra.run.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]

    process = _start(tmp_path, *args, "hydra.run.dir=killed")
    killed_at = _wait_for_checkpoint(process, tmp_path / "killed" / "checkpoints" / "last.ckpt",
                                     after_step=STEPS_PER_EPOCH)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert results_of(tmp_path / "killed")["status"] == "running"  # what a run killed outright leaves

    resumed = run_cli("resume", "killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert run_dir_of(resumed) == (tmp_path / "killed").resolve()
    a, b = results_of(tmp_path / "whole"), results_of(tmp_path / "killed")
    assert b["status"] == "completed" and [s["status"] for s in b["segments"]] == ["interrupted", "completed"]
    assert b["test/acc"] == a["test/acc"] and b["test/loss"] == a["test/loss"]
    assert b["history"] == [{**row, "train_images_per_s": b_row["train_images_per_s"]}
                            for row, b_row in zip(a["history"], b["history"])]
    final_a, final_b = _weights(tmp_path / "whole/checkpoints/last.ckpt"), _weights(
        tmp_path / "killed/checkpoints/last.ckpt")
    assert max((final_a[k] - final_b[k]).abs().max().item() for k in final_a) == 0.0, f"killed at step {killed_at}"
    assert b["train_time_s"] == pytest.approx(sum(s["train_time_s"] for s in b["segments"]), abs=1e-3)
    # The log continues where the checkpoint was taken: every row of the uninterrupted run, once.
    steps = lambda rows: [(r["epoch"], r["step"], r.get("val/loss")) for r in rows]  # noqa: E731
    assert steps(_metrics_rows(tmp_path / "killed")) == steps(_metrics_rows(tmp_path / "whole"))


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_records_interrupted_and_resume_finishes(
        tmp_path: Path, signum: int, status: int) -> None:
    process = _start(tmp_path, *SLOW_EPOCHS, "trainer.max_epochs=3", "training.checkpoint_every_n_steps=20",
                     "hydra.run.dir=run")
    run_dir = tmp_path / "run"
    _wait_for_checkpoint(process, run_dir / "checkpoints" / "last.ckpt", after_step=STEPS_PER_EPOCH)
    started = time.monotonic()
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert time.monotonic() - started < 30
    assert process.returncode == status, err[-2000:]
    assert out.strip().splitlines()[-1] == str(run_dir.resolve())  # the run folder, printed last
    assert "Traceback" not in out + err and f"cnnlab resume {run_dir.resolve()}" in err
    results = results_of(run_dir)
    assert results["status"] == "interrupted" and results["interrupted_by"] == signal.Signals(signum).name
    assert results["resume_command"] == f"cnnlab resume {run_dir.resolve()}"
    assert results["error"] is None and results["best_checkpoint"] and Path(results["best_checkpoint"]).is_file()

    resumed = run_cli("resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    finished = results_of(run_dir)
    assert finished["status"] == "completed" and finished["epochs"] == 3
    assert [row["epoch"] for row in finished["history"]] == [1, 2, 3]
    assert finished["started_at"] == results["started_at"] and len(finished["segments"]) == 2


def test_sigusr1_under_the_slurm_launcher_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path: Path) -> None:
    """SLURM's warning before pre-emption (`--signal=USR1@90`): the trial checkpoints, asks SLURM to requeue its
    job, and when SLURM starts the job again (the same command in the same run dir), it continues."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # stands in for SLURM's scontrol: records what it was asked
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.calls'}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    slurm = {"SLURM_JOB_ID": "4242", "SUBMITIT_EXECUTOR": "slurm", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = (*SLOW_EPOCHS, "trainer.max_epochs=2", "training.checkpoint_every_n_steps=20", "hydra.run.dir=trial")
    process = _start(tmp_path, *args, env=slurm)
    _wait_for_checkpoint(process, tmp_path / "trial" / "checkpoints" / "last.ckpt")
    process.send_signal(signal.SIGUSR1)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 138, err[-2000:]
    assert (tmp_path / "scontrol.calls").read_text().split() == ["requeue", "4242"]
    results = results_of(tmp_path / "trial")
    assert results["status"] == "interrupted" and results["interrupted_by"] == "SIGUSR1" and results["requeued"]

    again = _start(tmp_path, *args, env=slurm)  # what the requeued job runs
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    finished = results_of(tmp_path / "trial")
    assert finished["status"] == "completed" and [s["status"] for s in finished["segments"]] == [
        "interrupted", "completed"]
    assert "Resuming from" in (tmp_path / "trial" / "train.log").read_text()


def test_last_checkpoint_holds_the_final_epoch_even_when_the_best_is_early(tmp_path: Path) -> None:
    # Picking the *highest* validation loss makes the first epoch the best one.
    result = run_cli("train", *QUICK, "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=max", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = run_dir_of(result)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(results_of(run_dir)["best_checkpoint"], weights_only=True)
    assert best["epoch"] == 0 and last["epoch"] == 2
    assert last["global_step"] == 3 * 41  # every step of the three epochs (1,293 training images, batches of 32)


def test_an_exploding_loss_is_a_diverged_run(tmp_path: Path) -> None:
    # Adam at lr=1e9 on an MLP: the loss reaches ~1e9 and stays finite, so only the explosion test catches it.
    result = run_cli("train", *QUICK, "model=mlp", "optimizer.lr=1e9", cwd=tmp_path)
    assert result.returncode == 1
    assert "Training diverged" in result.stderr and "training.divergence_factor" in result.stderr
    results = results_of(run_dir_of(result))
    assert results["status"] == "diverged" and "exploded" in results["error"]


def test_resume_explains_folders_it_cannot_continue(tmp_path: Path, trained_digits_run: Path) -> None:
    nowhere = run_cli("resume", "no/such/run", cwd=tmp_path)
    assert nowhere.returncode == 2 and "is not a folder" in nowhere.stderr
    not_a_run = run_cli("resume", str(tmp_path), cwd=tmp_path)
    assert not_a_run.returncode == 2 and "is not a cnnlab run folder" in not_a_run.stderr
    done = run_cli("resume", str(trained_digits_run), cwd=tmp_path)
    assert done.returncode == 0 and "nothing to resume" in done.stdout
    for result in (nowhere, not_a_run, done):
        assert "Traceback" not in result.stdout + result.stderr


class _Payload:
    """Unpickling this runs `touch <marker>`: what a hostile checkpoint would do with a worse command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def hostile_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "shared.ckpt"
    torch.save({"state_dict": {"model.weight": _Payload(marker)}, "cnnlab_config": {}}, path)
    return path, marker


def test_a_hostile_checkpoint_runs_nothing_through_model_weights(tmp_path: Path, hostile_checkpoint) -> None:
    path, marker = hostile_checkpoint
    result = run_cli("train", *QUICK, f"model.weights={path}", cwd=tmp_path)
    assert result.returncode == 1 and not marker.exists()
    assert f"{path} was refused (model.weights)" in result.stderr and "posix.system" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_hostile_checkpoint_runs_nothing_through_eval(tmp_path: Path, hostile_checkpoint) -> None:
    path, marker = hostile_checkpoint
    result = run_cli("eval", f"ckpt_path={path}", cwd=tmp_path)
    assert result.returncode == 1 and not marker.exists()
    assert f"{path} was refused (cnnlab eval)" in result.stderr and "Traceback" not in result.stderr


def test_a_hostile_checkpoint_runs_nothing_through_resume(tmp_path: Path, hostile_checkpoint) -> None:
    path, marker = hostile_checkpoint
    first = run_cli("train", *QUICK, "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    results = results_of(tmp_path / "run")
    (tmp_path / "run" / "results.json").write_text(json.dumps({**results, "status": "interrupted"}))
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())  # someone swapped it
    result = run_cli("resume", "run", cwd=tmp_path)
    assert result.returncode == 1 and not marker.exists()
    assert "was refused" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [b'{"not": "a checkpoint"}', b"\x89PNG\r\n\x1a\n" + bytes(64), "truncated"])
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path: Path, trained_digits_run: Path, content) -> None:
    path = tmp_path / "model.ckpt"
    if content == "truncated":
        whole = (trained_digits_run / "checkpoints" / "last.ckpt").read_bytes()
        content = whole[: len(whole) // 2]
    path.write_bytes(content)
    for result in (run_cli("eval", f"ckpt_path={path}", cwd=tmp_path),
                   run_cli("train", *QUICK, f"model.weights={path}", cwd=tmp_path)):
        assert result.returncode == 1
        assert f"{path} is not a readable checkpoint" in result.stderr
        assert "Traceback" not in result.stderr and "train.log" not in result.stderr


def test_a_corrupt_decoded_cache_is_rebuilt_not_trained_on(tmp_path: Path, decoded_cache: Path) -> None:
    first = run_cli("train", *QUICK, "trainer.max_epochs=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    caches = sorted(decoded_cache.glob("digits-*.pt"))
    assert len(caches) == 2
    for cache in caches:
        cache.write_bytes(cache.read_bytes()[:1000])  # a copy cut short
    again = run_cli("train", *QUICK, "trainer.max_epochs=1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert results_of(run_dir_of(again))["test/acc"] == results_of(run_dir_of(first))["test/acc"]
    for cache in caches:
        assert torch.load(cache, weights_only=True)["images"].dtype == torch.uint8
    assert not list(decoded_cache.glob("*.tmp"))


def test_a_gpu_config_on_a_machine_without_one_suggests_the_cpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli("train", *QUICK, "trainer=gpu", cwd=tmp_path)
    assert result.returncode == 1
    assert "trainer=cpu" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((run_dir_of(result) / "results.json").read_text())["status"] == "failed"


def test_a_resumed_run_continues_its_wandb_run_offline(tmp_path: Path) -> None:
    env = {"WANDB_MODE": "offline", "HOME": str(tmp_path)}
    args = (*SLOW_EPOCHS, "trainer.max_epochs=2", "training.checkpoint_every_n_steps=20", "logger=[csv,wandb]",
            "hydra.run.dir=run")
    process = _start(tmp_path, *args, env=env)
    _wait_for_checkpoint(process, tmp_path / "run" / "checkpoints" / "last.ckpt")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    first_id = results_of(tmp_path / "run")["wandb_id"]
    resumed = run_cli("resume", "run", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = results_of(tmp_path / "run")
    assert results["status"] == "completed" and results["wandb_id"] == first_id
    segments = sorted((tmp_path / "run" / "wandb").glob(f"offline-run-*-{first_id}"))
    assert len(segments) == 2  # one offline record per segment, both of the same W&B run (`wandb sync` joins them)


def test_a_sweep_started_again_continues_its_interrupted_trial(tmp_path: Path) -> None:
    """Ctrl-C stops a sweep in its first trial; the same command with the same sweep dir continues that trial
    from its checkpoint and then runs the rest."""
    args = ("-m", *SLOW_EPOCHS, "trainer.max_epochs=2", "training.checkpoint_every_n_steps=20", "seed=1,2",
            "hydra.sweep.dir=sweep")
    process = _start(tmp_path, *args)
    _wait_for_checkpoint(process, tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert results_of(tmp_path / "sweep" / "0")["status"] == "interrupted"
    assert not (tmp_path / "sweep" / "1").exists()  # a signal stops the whole sweep ...
    assert "interrupted" in (tmp_path / "sweep" / "summary.md").read_text()  # ... after summarising it

    again = run_cli("train", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    first, second = results_of(tmp_path / "sweep" / "0"), results_of(tmp_path / "sweep" / "1")
    assert [s["status"] for s in first["segments"]] == ["interrupted", "completed"]
    assert second["status"] == "completed" and len(second["segments"]) == 1
