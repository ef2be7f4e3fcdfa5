"""An installed cnnlab (a wheel, not an editable checkout) carries and finds its config tree."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import hydra
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
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    _see_packages_of_this_interpreter(python)
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                               text=True)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([python, "-c", "import hydra; from cnnlab.config import builtin_config_dir; "
                                          "print(builtin_config_dir()); print(hydra.__file__)"],
                           cwd=work, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    conf, dependency = where.stdout.splitlines()
    assert str(env) in conf
    assert dependency == hydra.__file__  # this interpreter's dependencies, whether it runs in a virtualenv or not
    printed = subprocess.run([tmp_path / "env" / "bin" / "cnnlab", "train", "experiment=lenet5_mnist", "--cfg", "job"],
                             cwd=work, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["data"]["name"] == "mnist"


def _see_packages_of_this_interpreter(python: Path) -> None:
    """Put the site-packages of the interpreter running the tests on ``python``'s path, after its own.

    Not ``system_site_packages=True``: that gives the *base* interpreter's packages, which, when the tests run in a
    virtualenv, are not the ones cnnlab's dependencies were installed into. The folders are added as plain path
    entries, so their own ``.pth`` files (this checkout's editable install among them) are not read.
    """
    ours = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        ours.append(site.getusersitepackages())
    folders = list(dict.fromkeys(p for p in ours if Path(p).is_dir()))
    target = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    (Path(target) / "outer-site-packages.pth").write_text("".join(f"{p}\n" for p in folders))
