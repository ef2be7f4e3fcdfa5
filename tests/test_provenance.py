"""Every run is traceable to the recipe that made it (results.json, checkpoints) and reproducible from its folder:
``cnnlab rerun`` repeats a deterministic CPU run exactly, in a new folder; ``cnnlab diff`` names what differs."""

from __future__ import annotations

import hashlib
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import QUICK, results_of, run_cli, run_dir_of

RECIPE = """\
    # @package _global_
    # A small MLP on digits, from a team folder under git
    defaults:
      - override /model: mlp
    model:
      depth: 1
      width: 32
    """


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(work folder, recipe folder under git, run folder) of one deterministic CPU run of a team recipe."""
    work = tmp_path_factory.mktemp("provenance")
    recipes = work / "team"
    (recipes / "experiment").mkdir(parents=True)
    (recipes / "experiment" / "small_mlp.yaml").write_text(textwrap.dedent(RECIPE))
    git(recipes, "init", "-q")
    git(recipes, "add", ".")
    git(recipes, "commit", "-q", "-m", "recipe")
    result = run_cli("train", "--config-dir", str(recipes), "experiment=small_mlp", "trainer.deterministic=true",
                     *QUICK, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, recipes, run_dir_of(result)


def test_results_and_checkpoints_record_the_provenance(recipe_run: tuple[Path, Path, Path]) -> None:
    import torch

    work, recipes, run_dir = recipe_run
    provenance = results_of(run_dir)["provenance"]
    recipe_file = recipes / "experiment" / "small_mlp.yaml"
    assert provenance["recipe"]["name"] == "small_mlp"
    assert provenance["recipe"]["file"] == str(recipe_file)
    assert provenance["recipe"]["sha256"] == hashlib.sha256(recipe_file.read_bytes()).hexdigest()
    assert provenance["recipe"]["git"] == {"commit": git(recipes, "rev-parse", "HEAD"), "dirty": False}
    assert provenance["command"].startswith("cnnlab train --config-dir") and "experiment=small_mlp" in \
        provenance["command"]
    assert provenance["cnnlab"]["version"] and "commit" in provenance["cnnlab"]
    for package in ("torch", "torchvision", "lightning", "hydra-core"):
        assert provenance["versions"][package], package
    assert provenance["host"] and provenance["devices"]["cpu"] and provenance["devices"]["gpus"] == [] or \
        torch.cuda.is_available()
    assert provenance["data"]["dataset"] == "digits" and len(provenance["data"]["fingerprint"]) == 12
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    for checkpoint in checkpoints:
        stored = torch.load(checkpoint, weights_only=True, map_location="cpu")["cnnlab_provenance"]
        assert stored["recipe"]["sha256"] == provenance["recipe"]["sha256"]


def test_a_changed_recipe_shows_as_dirty(tmp_path: Path) -> None:
    from cnnlab.tracking.provenance import git_state

    (tmp_path / "experiment").mkdir()
    recipe = tmp_path / "experiment" / "r.yaml"
    recipe.write_text("a: 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "r")
    assert git_state(recipe.parent, recipe)["dirty"] is False
    recipe.write_text("a: 2\n")
    assert git_state(recipe.parent, recipe)["dirty"] is True


def test_rerun_reproduces_the_test_metrics_exactly(recipe_run: tuple[Path, Path, Path]) -> None:
    work, _, old = recipe_run
    result = run_cli("rerun", str(old), cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    new = run_dir_of(result)
    assert new != old and (new / ".hydra" / "config.yaml").is_file()
    before, after = results_of(old), results_of(new)
    assert after["status"] == "completed"
    metrics = sorted(k for k in before if k.startswith("test/"))
    assert metrics and {k: after[k] for k in metrics} == {k: before[k] for k in metrics}
    rerun_of = after["provenance"]["rerun_of"]
    assert rerun_of["run_dir"] == str(old)
    assert rerun_of["provenance"]["recipe"]["sha256"] == before["provenance"]["recipe"]["sha256"]
    assert after["provenance"]["command"] == f"cnnlab rerun {old}"
    diff = run_cli("diff", str(old), str(new), cwd=work)
    assert diff.returncode == 0, diff.stderr
    assert "config: no difference" in diff.stdout and "results: no difference" in diff.stdout


def test_rerun_with_a_change_and_diff(recipe_run: tuple[Path, Path, Path]) -> None:
    work, _, old = recipe_run
    result = run_cli("rerun", str(old), "seed=7", "optimizer.lr=0.002", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    new = run_dir_of(result)
    diff = run_cli("diff", str(old), str(new), cwd=work)
    assert diff.returncode == 0, diff.stderr
    assert "config: 2 differ" in diff.stdout
    lines = diff.stdout.splitlines()
    assert any(line.split()[:3] == ["seed", "42", "7"] for line in lines)
    assert any(line.split()[:3] == ["optimizer.lr", "0.001", "0.002"] for line in lines)


def test_rerun_refuses_groups_and_unknown_keys(recipe_run: tuple[Path, Path, Path]) -> None:
    work, _, old = recipe_run
    result = run_cli("rerun", str(old), "model=linear", cwd=work)
    assert result.returncode == 2 and "names a config group" in result.stderr
    result = run_cli("rerun", str(old), "optimizer.lrr=0.1", cwd=work)
    assert result.returncode == 2 and "Unknown config key 'optimizer.lrr'" in result.stderr
    result = run_cli("rerun", str(work / "nowhere"), cwd=work)
    assert result.returncode == 2 and "is not a folder" in result.stderr
