"""The training module and cnnlab's callbacks in process: optimizer kernels, progress bar, epoch history, and the
process settings of a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from cnnlab import build_datamodule, compose_config
from cnnlab.errors import ConfigError
from cnnlab.run import _trainer_options, build_classifier, train
from cnnlab.training.callbacks import EpochHistory, ProgressBar
from cnnlab.training.cpu import reuse_freed_memory
from cnnlab.training.optim import build_optimizer
from cnnlab.training.profilers import NoProfiler

ADAM = {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    return bool(optimizer.defaults.get("fused"))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_fused_kernels_are_the_default_where_torch_has_them(name: str) -> None:
    cfg = compose_config([f"optimizer={name}"])
    params = torch.nn.Linear(4, 2).parameters()
    assert _fused(build_optimizer(params, dict(cfg.optimizer)))


def test_fused_kernels_can_be_turned_off_and_are_left_out_when_unsupported() -> None:
    layer = torch.nn.Linear(4, 2)
    assert not _fused(build_optimizer(layer.parameters(), {**ADAM, "fused": False}))
    assert not _fused(build_optimizer(layer.parameters(), {**ADAM, "fused": None}, fused_allowed=False))
    assert not _fused(build_optimizer(torch.nn.Linear(4, 2, device="meta").parameters(), {**ADAM, "fused": None}))
    rmsprop = dict(compose_config(["optimizer=rmsprop"]).optimizer)
    assert "fused" not in rmsprop  # torch has no fused RMSprop: the option does not exist
    build_optimizer(layer.parameters(), rmsprop)


def test_fused_with_clipping_under_mixed_precision_is_explained() -> None:
    with pytest.raises(ConfigError, match="optimizer.fused=false"):
        build_optimizer(torch.nn.Linear(4, 2).parameters(), {**ADAM, "fused": True}, fused_allowed=False)


def test_fused_and_unfused_adam_take_the_same_steps() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    weights = []
    for fused in (False, True):
        layer = torch.nn.Linear(4, 2)
        layer.load_state_dict({"weight": torch.ones(2, 4), "bias": torch.zeros(2)})
        optimizer = build_optimizer(layer.parameters(), {**ADAM, "fused": fused})
        for _ in range(20):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(layer(x), y).backward()
            optimizer.step()
        weights.append(layer.weight.detach())
    assert torch.allclose(weights[0], weights[1], atol=1e-6)


def test_progress_bar_redraws_by_time_and_at_the_end_of_an_epoch() -> None:
    bar = ProgressBar(min_interval=3600)
    assert bar._should_update(1, 100)  # the first batch draws the bar
    assert not any(bar._should_update(n, 100) for n in range(2, 100))  # within the hour: no redraw
    assert bar._should_update(100, 100)  # the epoch's last batch always does
    eager = ProgressBar(min_interval=0)
    assert all(eager._should_update(n, 100) for n in range(1, 101))


def test_lightning_redraws_the_progress_bar_only_when_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks.progress import tqdm_progress

    redraws: list[int] = []
    monkeypatch.setattr(tqdm_progress, "_update_n", lambda bar, n: redraws.append(n))
    cfg = compose_config(["data.batch_size=64"])
    datamodule = build_datamodule(cfg)
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[ProgressBar(min_interval=3600)])
    trainer.fit(build_classifier(cfg, datamodule), datamodule=datamodule)
    assert redraws == [1, trainer.num_training_batches]  # not once per batch


def test_a_short_fit_records_history_speed_and_training_accuracy() -> None:
    cfg = compose_config(["data.batch_size=64", "trainer.max_epochs=2"])
    datamodule = build_datamodule(cfg)
    classifier = build_classifier(cfg, datamodule)
    history = EpochHistory()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[history])
    trainer.fit(classifier, datamodule=datamodule)
    assert [r["epoch"] for r in history.rows] == [1, 2]
    for row in history.rows:
        assert 0.0 <= row["train/acc"] <= 1.0 and row["train/loss"] > 0 and row["train_images_per_s"] > 0
    assert history.rows[1]["train/acc"] > history.rows[0]["train/acc"]
    assert history.images == 2 * len(datamodule.train_set)
    assert history.images_per_second == pytest.approx(history.images / history.seconds)


def test_with_no_profiler_configured_every_hook_runs_in_one_inert_context() -> None:
    cfg = compose_config(["trainer.max_epochs=1"])
    profiler = _trainer_options(cfg)["profiler"]
    assert isinstance(profiler, NoProfiler)
    assert profiler.profile("[Callback]a.on_train_batch_end") is profiler.profile("[LightningModule]b.training_step")
    datamodule = build_datamodule(cfg)
    history = EpochHistory()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[history], profiler=profiler)
    trainer.fit(build_classifier(cfg, datamodule), datamodule=datamodule)
    assert history.images == len(datamodule.train_set) and "train/acc" in history.rows[0]
    assert _trainer_options(compose_config(["trainer.profiler=simple"]))["profiler"] == "simple"


def test_the_classifier_stores_lightnings_hook_name_plainly_and_still_registers_modules() -> None:
    cfg = compose_config([])
    classifier = build_classifier(cfg, build_datamodule(cfg))
    classifier._current_fx_name = "training_step"
    assert classifier.__dict__["_current_fx_name"] == "training_step"
    classifier.probe = torch.nn.Linear(2, 2)
    assert classifier._modules["probe"] is classifier.probe and "probe" not in classifier.__dict__


def test_a_cpu_run_stops_asking_nvml_for_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as `import lightning` leaves it
    cfg = compose_config(["trainer.max_epochs=1", "trainer.enable_model_summary=false",
                          f"logger.csv.save_dir={tmp_path}", f"callbacks.model_checkpoint.dirpath={tmp_path}"])
    assert train(cfg, tmp_path)["status"] == "completed"
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ


# Page faults per "step" of a fresh process, before and after reuse_freed_memory(): a step holds ten 2 MiB tensors
# at once and then frees them, as a small network's activations are.
PAGE_FAULTS_PER_STEP = """
import resource, torch
from cnnlab.training.cpu import reuse_freed_memory

def faults_per_step(steps=20):
    def step():
        held = [torch.ones(1 << 19) for _ in range(10)]
        del held
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

default = faults_per_step()
print(reuse_freed_memory(), default, faults_per_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc")
def test_reusing_freed_memory_stops_the_page_faults_of_every_step() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    applied, default, tuned = subprocess.run([sys.executable, "-c", PAGE_FAULTS_PER_STEP], env=env, check=True,
                                             capture_output=True, text=True).stdout.split()
    assert applied == "True"
    assert float(default) > 100  # glibc hands the memory back and faults it in again on every step
    assert float(tuned) < float(default) / 4


@pytest.mark.parametrize("setting", ["MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"])
def test_a_users_own_allocator_settings_win(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(setting, "")
    assert reuse_freed_memory() is False


def test_the_objects_torch_and_lightning_create_at_import_are_frozen_once() -> None:
    script = ("import gc; from cnnlab.cli import _import_heavy; _import_heavy('cnnlab.run'); frozen = gc.get_freeze_count(); "
              "_import_heavy('cnnlab.run'); print(frozen, gc.get_freeze_count(), gc.isenabled())")
    frozen, after_second_import, enabled = subprocess.run([sys.executable, "-c", script], check=True,
                                                          capture_output=True, text=True).stdout.split()
    assert int(frozen) > 100_000  # out of the collector's scans for good
    assert after_second_import == frozen  # a second run in the process does not freeze the first one's garbage
    assert enabled == "True"
