"""Recipes from several places (built-in, --config-dir, CNNLAB_RECIPES, an installed recipe package) and
``cnnlab recipes list|show|validate``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli
from test_packaging import _see_packages_of_this_interpreter

EXAMPLE = REPO / "examples" / "team-recipes"


def recipe(folder: Path, name: str, text: str) -> Path:
    path = folder / "experiment" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def team_folders(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "team_a", tmp_path / "team_b"
    recipe(first, "small_mlp", """\
        # @package _global_
        # A small MLP on digits, team A's
        defaults:
          - override /model: mlp
        model:
          depth: 1
          width: 32
        """)
    recipe(second, "small_mlp", """\
        # @package _global_
        # Team B's small_mlp: hidden by team A's
        defaults:
          - override /model: linear
        """)
    recipe(second, "linear_digits", """\
        # @package _global_
        # A linear classifier on digits
        defaults:
          - override /model: linear
        optimizer:
          lr: 0.01
        """)
    return first, second


def test_cnnlab_recipes_folders_in_order_of_precedence(tmp_path: Path, team_folders: tuple[Path, Path]) -> None:
    first, second = team_folders
    env = {"CNNLAB_RECIPES": os.pathsep.join(map(str, team_folders))}
    printed = run_cli("train", "experiment=small_mlp", "--cfg", "job", cwd=tmp_path, env=env)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["model"]["width"] == 32  # team A's, the first folder
    printed = run_cli("train", "experiment=linear_digits", "--cfg", "job", cwd=tmp_path, env=env)
    assert yaml.safe_load(printed.stdout)["model"]["name"] == "linear"

    listed = run_cli("recipes", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "built-in" in lines["lenet5_mnist"] and "LeNet-5 (modern) on MNIST" in lines["lenet5_mnist"]
    assert f"folder {first}" in lines["small_mlp"] and "A small MLP on digits, team A's" in lines["small_mlp"]
    assert f"hides folder {second}" in lines["small_mlp"]
    assert f"folder {second}" in lines["linear_digits"]


def test_recipes_list_and_show_load_no_torch_and_are_quick(tmp_path: Path, team_folders: tuple[Path, Path]) -> None:
    code = textwrap.dedent("""\
        import sys, time, contextlib, io
        started = time.perf_counter()
        from cnnlab.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["recipes", "list", "--config-dir", sys.argv[1]]) == 0
        listed = time.perf_counter() - started
        started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            assert main(["recipes", "show", "small_mlp", "--config-dir", sys.argv[1]]) == 0
        shown = time.perf_counter() - started
        heavy = [m for m in ("torch", "lightning", "torchvision") if m in sys.modules]
        print(f"{listed:.2f} {shown:.2f} {heavy}")
        """)
    result = subprocess.run([sys.executable, "-c", code, str(team_folders[0])], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed, shown, heavy = result.stdout.split(maxsplit=2)
    assert heavy.strip() == "[]"
    assert float(listed) < 1.5 and float(shown) < 1.5, result.stdout


def test_recipes_show_marks_the_recipes_lines(tmp_path: Path, team_folders: tuple[Path, Path]) -> None:
    shown = run_cli("recipes", "show", "small_mlp", "--config-dir", str(team_folders[0]), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "# small_mlp: A small MLP on digits, team A's"
    assert "model=mlp (default lenet5_bn)" in lines[2]
    assert "*   width: 32    # added by the recipe" in lines or any(
        line.startswith("*") and "width: 32" in line for line in lines)
    assert any(line.startswith("*") and "name: mlp" in line and "# was" in line for line in lines)
    assert any(line.startswith("  ") and "seed: 42" in line for line in lines)  # unchanged: not marked
    missing = run_cli("recipes", "show", "small_mpl", "--config-dir", str(team_folders[0]), cwd=tmp_path)
    assert missing.returncode == 2 and "Did you mean small_mlp?" in missing.stderr


def test_recipes_validate_a_team_folder(tmp_path: Path, team_folders: tuple[Path, Path]) -> None:
    folder = team_folders[0]
    recipe(folder, "broken_depth", """\
        # @package _global_
        # A ResNet depth that does not exist
        defaults:
          - override /model: resnet_cifar
        model:
          depth: 19
        """)
    recipe(folder, "hostile", """\
        # @package _global_
        # Names code to run
        callbacks:
          evil:
            _target_: os.makedirs
            name: made
        """)
    recipe(folder, "mnist_mlp", """\
        # @package _global_
        # An MLP on MNIST: no MNIST here, so it trains a step on stand-in files in MNIST's format
        defaults:
          - override /data: mnist
          - override /model: mlp
        data:
          root: nowhere
          download: false
        """)
    result = run_cli("recipes", "validate", "--config-dir", str(folder), "small_mlp", "broken_depth", "hostile",
                     "mnist_mlp", "lenet5_mnist", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "ok (real data" in rows["small_mlp"]
    assert "ok (stand-in data" in rows["mnist_mlp"] and "ok (stand-in data" in rows["lenet5_mnist"]
    assert "error:" in rows["broken_depth"] and "model.depth" in rows["broken_depth"]
    assert "error:" in rows["hostile"] and "os.makedirs" in rows["hostile"]
    assert not (tmp_path / "made").exists() and not (tmp_path / "nowhere").exists()
    assert "3 of 5 recipes ok; failed: broken_depth, hostile" in result.stdout
    float(rows["small_mlp"].split()[1])  # seconds
    ok = run_cli("recipes", "validate", "--config-dir", str(folder), "small_mlp", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.slow
def test_recipe_package_installed_in_a_venv(tmp_path: Path) -> None:
    """``pip install`` the example recipe package: experiment=our_baseline works from any folder, listed as a
    package's."""
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    _see_packages_of_this_interpreter(python)
    # cnnlab itself: this checkout, as its editable install provides it (the .pth files of the outer site-packages
    # are not read)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "cnnlab-checkout.pth").write_text(f"{REPO}\n")
    # Built offline with this interpreter's setuptools (the venv's own may predate bdist_wheel)
    import setuptools

    build_env = {**os.environ, "PYTHONPATH": str(Path(setuptools.__file__).parent.parent)}
    source = tmp_path / "team-recipes"  # built from a copy: the build leaves build/ and *.egg-info behind
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                                str(source)], capture_output=True, text=True, env=build_env)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CNNLAB_RECIPES", "PYTHONPATH"))}
    printed = subprocess.run([python, "-m", "cnnlab", "train", "experiment=our_baseline", "--cfg", "job"], cwd=work,
                             capture_output=True, text=True, env=environment)
    assert printed.returncode == 0, printed.stderr
    cfg = yaml.safe_load(printed.stdout)
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.05  # the package's changes
    assert cfg["model"]["name"] == "lenet5" and cfg["data"]["name"] == "mnist"  # from the built-in recipe
    listed = subprocess.run([python, "-m", "cnnlab", "recipes", "list"], cwd=work, capture_output=True, text=True,
                            env=environment)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("our_baseline"))
    assert "package pkg://team_recipes.conf" in line and "Our baseline" in line
    assert str(env) in subprocess.run([python, "-m", "cnnlab", "recipes", "show", "our_baseline"], cwd=work,
                                      capture_output=True, text=True, env=environment).stdout.splitlines()[1]
