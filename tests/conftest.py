from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cnnlab <args>`` as a user would, in ``cwd`` (so ``outputs/`` lands there)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=timeout)


def run_dir_of(result: subprocess.CompletedProcess) -> Path:
    """The run dir: by the run contract, the last line ``cnnlab train`` prints."""
    return Path(result.stdout.strip().splitlines()[-1])


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="session", autouse=True)
def decoded_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Decoded-dataset cache of this test session (the CLI runs inherit it through the environment)."""
    path = tmp_path_factory.mktemp("cnnlab-cache")
    os.environ["CNNLAB_CACHE_DIR"] = str(path)
    return path


# Keep CLI tests short: a couple of epochs on digits, no model summary table.
QUICK = ("trainer.max_epochs=2", "trainer.enable_model_summary=false")


@pytest.fixture(scope="session")
def trained_digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished default run (LeNet-5 on digits, 4 epochs), shared by the tests that read its outputs."""
    cwd = tmp_path_factory.mktemp("default_run")
    result = run_cli("train", "trainer.max_epochs=4", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir_of(result)
