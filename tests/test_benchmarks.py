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


def test_the_image_folder_benchmark_runs_every_path_and_writes_its_ratios(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another benchmark\n\nIts figures stay.\n")
    command = [sys.executable, str(BENCHMARKS / "bench_image_folder.py"), "--small", "--rounds", "1",
               "--work", str(tmp_path / "work"), "--results", str(results)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    text = results.read_text()
    assert "## Another benchmark\n\nIts figures stay." in text
    assert len(list((tmp_path / "work" / "folder-small" / "train").glob("class_*/*.jpg"))) == 500
    for name in ("baseline", "cnnlab before", "cnnlab per-sample", "cnnlab cache"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert float(row.split("|")[3].replace(",", "")) > 0  # training images/s from epoch 2 on
    for name in ("cnnlab before", "cnnlab per-sample", "cnnlab cache"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} / baseline |"))
        assert float(row.split("|")[2]) > 0
    assert "Where the time goes" in text and "torchvision.io.decode_image" in text


def test_the_before_path_is_the_pil_and_transform_object_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """What the benchmark's 'cnnlab before' run trains on: PIL images through a v2.Compose, float batches."""
    import torch
    from torchvision.transforms import v2

    import real_format
    from cnnlab import build_datamodule, compose_config
    from cnnlab.data.datamodule import ImageDataModule

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import pil_folder_pipeline

    monkeypatch.setattr(ImageDataModule, "_setup_loader", pil_folder_pipeline.old_setup_loader)
    monkeypatch.setattr(ImageDataModule, "_loader", pil_folder_pipeline.old_loader)
    root = real_format.write_image_folder(tmp_path / "images")
    dm = build_datamodule(compose_config(["data=imagefolder", f"data.root={root}", "data.image_size=32",
                                          "data.num_workers=0", "data.cache=off", "augmentation=standard"]))
    dm.setup("fit")
    assert dm.train_set.dataset.loader is pil_folder_pipeline.load_pil_image
    assert isinstance(dm.train_set.transform, v2.Compose)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
