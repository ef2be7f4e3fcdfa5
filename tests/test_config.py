"""Composition of every config option, and the messages for bad command lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from cnnlab import compose_config
from cnnlab.config import builtin_config_dir
from cnnlab.errors import ConfigError
from conftest import run_cli

GROUPS = ["model", "optimizer", "scheduler", "data", "augmentation", "loss", "trainer", "logger", "callbacks",
          "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (builtin_config_dir() / group).glob("*.yaml"))


def every_option() -> list[tuple[str, str]]:
    return [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize(("group", "option"), every_option())
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    extra = ["data.root=/data/images"] if (group, option) in {("data", "imagefolder"), ("data", "imagenet")} else []
    if (group, option) == ("model", "lecun1989"):
        extra = ["data.image_size=16"]  # LeCun's 1989 nets read 16x16 images: on 8x8 digits the config check refuses
    cfg = compose_config([f"{group}={option}", *extra])
    assert cfg.data.channels >= 1 and cfg.model.name


def test_sweep_axes_exist_in_the_default_config() -> None:
    cfg = compose_config(["model=mlp"])
    assert isinstance(cfg.optimizer.lr, float)
    assert isinstance(cfg.data.batch_size, int)
    assert isinstance(cfg.model.depth, int)


def test_augmentations_compose() -> None:
    cfg = compose_config(["augmentation=[standard,colour,random_erasing]"])
    assert list(cfg.augmentation) == ["horizontal_flip", "random_crop", "colour_jitter", "random_erasing"]


def test_several_loggers_at_once() -> None:
    cfg = compose_config(["logger=[csv,wandb,tensorboard]"])
    assert set(cfg.logger) == {"csv", "wandb", "tensorboard"}


def test_recipe_then_override() -> None:
    cfg = compose_config(["experiment=lenet5_mnist", "optimizer.lr=0.1"])
    assert cfg.data.name == "mnist" and cfg.model.name == "lenet5" and cfg.trainer.max_epochs == 5
    assert cfg.optimizer.lr == 0.1


def test_compose_config_matches_the_cli(tmp_path) -> None:
    """The notebook API returns exactly the config ``cnnlab train --cfg job`` prints."""
    args = ["experiment=lenet5_mnist", "optimizer.lr=0.1", "model.dropout=0.25"]
    printed = run_cli("train", *args, "--cfg", "job", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout) == OmegaConf.to_container(compose_config(args))


def test_team_recipe_folder(tmp_path) -> None:
    (tmp_path / "recipes" / "experiment").mkdir(parents=True)
    (tmp_path / "recipes" / "experiment" / "tiny_mlp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: mlp\nmodel:\n  depth: 1\n  width: 32\n")
    cfg = compose_config(["experiment=tiny_mlp"], config_dir=tmp_path / "recipes")
    assert cfg.model.name == "mlp" and cfg.model.width == 32
    printed = run_cli("train", "--config-dir", "recipes", "experiment=tiny_mlp", "--cfg", "job", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["model"]["width"] == 32


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=lenet6"], ["Unknown model 'lenet6'", "Did you mean model=lenet5?", "lecun1989, lenet5, lenet5_bn, linear, mlp"]),
        (["optimizer.lrr=0.1"], ["Unknown config key 'optimizer.lrr'", "Did you mean optimizer.lr=0.1?",
                                 "+optimizer.lrr=0.1"]),
        (["data.batch_size=abc"], ["data.batch_size", "must be an integer", "'abc'"]),
        (["optimizer.lr=fast"], ["optimizer.lr", "must be a number"]),
        (["augmentation=[standard,flipp]"], ["Unknown augmentation 'flipp'", "standard"]),
        (["data=imagefolder"], ["data.root must be set"]),
        (["data.val_split=1.5"], ["data.val_split", "[0, 1)"]),
        (["scheduler=onecycle", "scheduler.interval=epoch"], ["scheduler.interval=step"]),
        (["optimizer.lr=0.1,0.2", "data.batch_size=32,big"], ["data.batch_size", "'big'"]),
        (["model=mlp", "model.depth=="], ["Cannot read the override"]),
    ],
)
def test_bad_overrides_say_what_to_do(overrides: list[str], expected: list[str]) -> None:
    from cnnlab.config import check_command_line

    with pytest.raises(ConfigError) as caught:
        check_command_line(overrides)
    for text in expected:
        assert text in str(caught.value)


def test_cli_config_errors_are_one_paragraph_without_torch(tmp_path) -> None:
    """Config errors are reported before torch or Lightning is imported (that is what keeps them fast)."""
    probe = (
        "import sys; from cnnlab.cli import main; "
        "rc = main(['train', 'optimizer.lrr=0.1']); "
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'heavy import'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Did you mean optimizer.lr=0.1?" in lines[0]
    assert not (tmp_path / "outputs").exists()


def test_cli_help_lists_groups(tmp_path) -> None:
    result = run_cli("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("model", "optimizer", "data", "augmentation", "experiment"):
        assert group in result.stdout


def test_help_piped_into_a_reader_that_has_gone(tmp_path) -> None:
    """`cnnlab train --help | head -1`, when head has exited before the help is written: a quiet end."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write fails with a broken pipe
    result = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--help"], cwd=tmp_path, stdout=write_end,
                            stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""
