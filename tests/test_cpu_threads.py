"""A CPU run computes on the cores its DataLoader workers leave free (cnnlab.training.cpu.leave_cores_to_workers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import real_format
from conftest import results_of, run_cli, run_dir_of

RUN = ["train", "data=imagefolder", "data.image_size=32", "data.batch_size=16", "data.val_split=0.2",
       "trainer.max_epochs=1", "trainer.enable_model_summary=false", "model=lenet5"]


def torch_default_threads() -> int:
    code = "import torch; print(torch.get_num_threads())"
    env = {"PATH": "/usr/bin:/bin"}
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env=env).stdout)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_format.write_image_folder(tmp_path_factory.mktemp("threads") / "images", classes=3, per_class=12,
                                          size=40)


def test_workers_get_their_cores_and_a_run_without_workers_keeps_them_all(images: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    cores = torch_default_threads()
    per_sample = run_cli(*RUN, f"data.root={images}", "data.cache=off", "data.num_workers=1", cwd=tmp_path)
    assert per_sample.returncode == 0, per_sample.stderr[-3000:]
    results = results_of(run_dir_of(per_sample))
    assert results["status"] == "completed"
    assert results["torch_threads"] == max(1, cores - 1)
    if cores > 1:
        assert (f"1 DataLoader worker beside the training on {cores} cores: torch computes on {cores - 1} thread"
                in per_sample.stdout + per_sample.stderr)
    cached = run_cli(*RUN, f"data.root={images}", "data.cache=memory", "data.num_workers=1",
                     f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert results_of(run_dir_of(cached))["torch_threads"] == cores  # no workers in training: every core
    assert "beside the training" not in cached.stdout + cached.stderr


def test_the_users_thread_setting_wins(images: Path, tmp_path: Path) -> None:
    cores = torch_default_threads()  # torch caps OMP_NUM_THREADS at this: ask for all, beside a worker
    result = run_cli(*RUN, f"data.root={images}", "data.cache=off", "data.num_workers=1", cwd=tmp_path,
                     env={"OMP_NUM_THREADS": str(cores)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert results_of(run_dir_of(result))["torch_threads"] == cores
    assert "beside the training" not in result.stdout + result.stderr


def test_runs_in_one_process_do_not_compound_the_reduction(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep's trials run one after another in one process: each starts from torch's own count."""
    import torch

    from cnnlab.training import cpu

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu, "_torch_default_threads", 6)
    try:
        assert [cpu.leave_cores_to_workers(w) for w in (2, 2, 0, 8)] == [4, 4, 6, 1]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
