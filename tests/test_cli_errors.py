"""Mistakes on ``cnnlab train``'s command line get one paragraph that names the problem and the fix, exit status 2,
and no traceback, before anything is trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli

GROUPS = "augmentation, callbacks, data, experiment, launcher, logger, loss, model, optimizer, scheduler, sweep, trainer"


def one_paragraph_error(result) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr, result.stderr
    assert "unexpected" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cnnlab train: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [("modle=mlp", "Did you mean model=mlp?"), ("optimzer=sgd", "Did you mean optimizer=sgd?"),
     ("modle=mpl", "Did you mean model=mlp?"), ("modle.depth=3", "Did you mean model.depth=3?")],
)
def test_misspelt_group_suggests_the_group(tmp_path: Path, override: str, suggestion: str) -> None:
    message = one_paragraph_error(run_cli("train", override, cwd=tmp_path))
    assert suggestion in message
    assert GROUPS in message
    assert f"+{override.split('=')[0]}" not in message.split("on purpose")[0]  # not offered as the fix


def test_misspelt_top_level_key_still_suggests_the_key(tmp_path: Path) -> None:
    assert "Did you mean seed=3?" in one_paragraph_error(run_cli("train", "sed=3", cwd=tmp_path))


@pytest.mark.parametrize(
    ("args", "key"),
    [(["hydra.run.dir=/proc/x"], "hydra.run.dir=/proc/x"),
     (["hydra.run.dir=/proc/${now:%Y-%m-%d}/run"], "hydra.run.dir=/proc/2"),  # resolved as Hydra will
     (["hydra.run.dir=/proc/${hydra:job.name}"], "hydra.run.dir=/proc/${hydra:job.name}"),  # known only at launch
     (["-m", "hydra.sweep.dir=/proc/x", "seed=1,2"], "hydra.sweep.dir=/proc/x")],
)
def test_output_dir_that_cannot_be_created(tmp_path: Path, args: list[str], key: str) -> None:
    message = one_paragraph_error(run_cli("train", *args, cwd=tmp_path))
    assert key in message and "cannot be created" in message and "/proc" in message
    assert not (tmp_path / "outputs").exists() and not list(tmp_path.iterdir())  # nothing left behind


def test_output_dir_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    message = one_paragraph_error(run_cli("train", "hydra.run.dir=notes.txt/run", cwd=tmp_path))
    assert "hydra.run.dir=notes.txt/run" in message and "notes.txt is a file" in message


def test_output_dir_check_writes_nothing(tmp_path: Path) -> None:
    from cnnlab.config import check_command_line

    (tmp_path / "runs").mkdir()
    check_command_line([f"hydra.run.dir={tmp_path}/runs/${{now:%H-%M-%S}}"])
    check_command_line(["-m", f"hydra.sweep.dir={tmp_path}/sweeps/a", "seed=1,2"])
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and not list((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    ("text", "problem"),
    [("# @package _global_\ndefaults:\n  - override /model: mlp\nmodel:\n  depth: [1\n", "expected ',' or ']'"),
     ("model:\n  depth: 1\n width: : 3\n", "line 3")],
)
def test_recipe_that_is_not_yaml(tmp_path: Path, text: str, problem: str) -> None:
    recipe = tmp_path / "recipes" / "experiment" / "broken.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(text)
    message = one_paragraph_error(run_cli("train", "--config-dir", "recipes", "experiment=broken", cwd=tmp_path))
    assert f"{recipe} is not valid YAML" in message and problem in message
    assert not (tmp_path / "outputs").exists()
