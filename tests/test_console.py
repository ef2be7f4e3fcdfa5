"""What a person sees: a normal run prints what matters and none of the libraries' noise; every combination of
list options that README and --help show builds a working Trainer."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
from hydra.utils import instantiate

from cnnlab import compose_config
from conftest import QUICK, results_of, run_cli, run_dir_of

NOISE = (
    "💡 Tip", "litlogger",  # Lightning's advertisement
    "exists and is not empty",  # Lightning's CSV logger and checkpoint callback, about the run's own fresh folder
    "Total FLOPs: 0",  # the model summary without an example input
    "Be aware that when using `ckpt_path`",  # Lightning, on every `cnnlab eval`
    "anonymous setting has no effect",  # W&B, because Lightning passes anonymous=None
    "Traceback",
)


def test_a_normal_run_prints_the_essentials_and_no_noise(tmp_path: Path) -> None:
    result = run_cli("train", "trainer.max_epochs=1", "logger=[csv,wandb]", cwd=tmp_path,
                     env={"WANDB_MODE": "offline", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in console, noise
    assert "lenet5 (61,848 parameters) on digits (10 classes: 1,293 training / 144 validation / 360 test images)" \
        in console
    assert "Total FLOPs:" in console and "test/acc" in console
    run_dir = run_dir_of(result)
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)

    evaluated = run_cli("eval", f"ckpt_path={results_of(run_dir)['best_checkpoint']}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    for noise in NOISE:
        assert noise not in evaluated.stdout + evaluated.stderr, noise


@pytest.mark.parametrize("callbacks", ["[default]", "[default,early_stopping]", "[default,rich]",
                                       "[default,early_stopping,rich]"])
def test_every_callbacks_combination_builds_a_trainer(callbacks: str, tmp_path: Path) -> None:
    cfg = compose_config([f"callbacks={callbacks}", f"callbacks.model_checkpoint.dirpath={tmp_path}"])
    built = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    pl.Trainer(callbacks=built, logger=False, default_root_dir=str(tmp_path), max_epochs=1)  # raises on conflicts
    bars = [c for c in built if isinstance(c, pl.callbacks.ProgressBar)]
    assert len(bars) == 1


def test_the_rich_combination_trains(tmp_path: Path) -> None:
    result = run_cli("train", *QUICK, "callbacks=[default,early_stopping,rich]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert results_of(run_dir_of(result))["status"] == "completed"
