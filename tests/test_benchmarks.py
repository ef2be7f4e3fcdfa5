"""The benchmark baselines run and are what they claim to be (their timings are the scripts' business)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, results_of, run_dir_of

BENCHMARKS = REPO / "benchmarks"


needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs the shared MNIST copy")


@needs_mnist
def test_the_template_baseline_is_a_cnnlab_run_fed_by_the_templates_v1_transforms(tmp_path: Path) -> None:
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=30", "trainer.limit_val_batches=4",
             "trainer.limit_test_batches=4", "trainer.enable_model_summary=false"]
    result = subprocess.run([sys.executable, str(BENCHMARKS / "template_pipeline.py"), "train",
                             "experiment=lenet5_mnist", f"data.root={SHARED_DATA}", "data.pipeline=loader", *short],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "template per-sample transforms: Compose( ToTensor() Normalize(mean=[0.1307], std=[0.3081]) )" \
        in result.stderr
    results = results_of(run_dir_of(result))
    assert results["status"] == "completed" and results["test/acc"] > 0.7


@needs_mnist
@pytest.mark.parametrize("tuned", [False, True])
def test_the_plain_loop_baseline_learns_mnist(tuned: bool) -> None:
    command = [sys.executable, str(BENCHMARKS / "plain_loop.py"), "--root", str(SHARED_DATA), "--epochs", "1"]
    result = subprocess.run(command + (["--tuned"] if tuned else []), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["test/acc"] > 0.97 and report["train_images_per_s"] > 0
