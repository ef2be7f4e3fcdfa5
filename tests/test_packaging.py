"""An installed cnnlab (a wheel, not an editable checkout) carries and finds its config tree."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from conftest import REPO


@pytest.mark.slow
def test_wheel_install_finds_conf(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(REPO)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("cnnlab-*.whl"))
    # The environment reuses this interpreter's torch & co; only cnnlab itself comes from the wheel.
    venv.create(tmp_path / "env", system_site_packages=True, with_pip=True)
    python = tmp_path / "env" / "bin" / "python"
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                               text=True)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([python, "-c", "from cnnlab.config import builtin_config_dir; print(builtin_config_dir())"],
                           cwd=work, capture_output=True, text=True)
    assert str(tmp_path / "env") in where.stdout, where.stdout + where.stderr
    printed = subprocess.run([tmp_path / "env" / "bin" / "cnnlab", "train", "experiment=lenet5_mnist", "--cfg", "job"],
                             cwd=work, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["data"]["name"] == "mnist"
