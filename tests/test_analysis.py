"""cnnlab analyze and the analyses (cnnlab/analysis/): features + PCA + external classifiers, confusion."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED_DATA, results_of, run_cli, run_dir_of
from test_config import options

# torchvision's networks take 15-45 s each here to build and run: slow.
TORCHVISION = ("alexnet", "vgg", "googlenet", "inception_v3", "resnet")
CONV_FAMILIES = [pytest.param(m, marks=pytest.mark.slow) if m in TORCHVISION else m
                 for m in options("model") if m not in ("linear", "mlp")]


@pytest.fixture()
def digits_run(trained_digits_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's finished digits run (analyses write into the run folder)."""
    copy = tmp_path / trained_digits_run.name
    shutil.copytree(trained_digits_run, copy, ignore=shutil.ignore_patterns("analysis"))
    return copy


def _analyze(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("analyze", str(run_dir), *args, cwd=run_dir.parent)


# --- features ----------------------------------------------------------------------------------------------------

def test_features_on_digits_match_the_head_and_are_cached(digits_run: Path) -> None:
    result = _analyze(digits_run, "analysis=[features]")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(digits_run / "analysis")
    results = results_of(digits_run)
    head = results["analysis/features/head_acc"]
    assert head == pytest.approx(results["test/acc"], abs=1e-6)  # the same checkpoint, the same test split
    assert results["analysis/features/linear_svm_acc"] >= head - 0.03
    assert results["analysis/features/knn_acc"] > 0.8  # chance: 0.1
    assert results["analysis/features/dino_knn_acc"] > 0.8
    assert results["analysis/features/pca_variance"] >= 0.99
    out = digits_run / "analysis" / "features"
    report = json.loads((out / "features.json").read_text())
    assert report["cached"] is False and report["layers"]["penultimate"]["module"] == "classifier.4"
    for png in ("pca_2d_penultimate.png", "explained_variance_penultimate.png", "accuracy_penultimate.png"):
        assert (out / png).stat().st_size > 10_000
    stamp = (out / "features.npz").stat().st_mtime_ns
    again = _analyze(digits_run, "analysis=[features]", "analysis.features.pca=5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "features.json").read_text())["cached"] is True
    assert (out / "features.npz").stat().st_mtime_ns == stamp
    assert results_of(digits_run)["analysis/features/pca_components"] == 5


def test_features_of_a_named_conv_layer(digits_run: Path) -> None:
    result = _analyze(digits_run, "analysis=[features]", "analysis.features.layers=[features.4,classifier.1]",
                      "analysis.features.classifiers=[linear_svm,dino_knn]", "analysis.features.pca=null")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((digits_run / "analysis" / "features" / "features.json").read_text())
    assert report["layers"]["features.4"]["dim"] == 16  # 16 conv maps, global-average-pooled
    assert report["layers"]["classifier.1"]["dim"] == 84
    results = results_of(digits_run)
    assert results["analysis/features/features.4/linear_svm_acc"] > 0.5
    assert results["analysis/features/classifier.1/dino_knn_acc"] > 0.8


def test_pca_variance_fraction_keeps_at_least_that_fraction() -> None:
    from cnnlab.analysis.features import evaluate_layer

    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 40)) * np.linspace(5, 0.1, 40)
    test = rng.normal(size=(100, 40)) * np.linspace(5, 0.1, 40)
    for fraction in (0.5, 0.8, 0.95):
        _, reduction = evaluate_layer(train, rng.integers(0, 3, 300), test, rng.integers(0, 3, 100),
                                      {"pca": fraction, "standardize": False, "classifiers": []}, 3, 0,
                                      torch.device("cpu"))
        assert reduction["variance_kept"] >= fraction
        assert reduction["pca_components"] < 40


def test_weighted_knn_is_dinos_knn_classifier() -> None:
    """Against a direct transcription of DINO's eval_knn.knn_classifier (one test image at a time)."""
    from cnnlab.analysis.features import weighted_knn

    torch.manual_seed(0)
    train, test = torch.randn(200, 16), torch.randn(50, 16)
    labels = torch.randint(0, 4, (200,))
    scores = weighted_knn(train, labels, test, 4, k=7, temperature=0.07, chunk=8)
    train_n = torch.nn.functional.normalize(train, dim=1)
    for i, x in enumerate(torch.nn.functional.normalize(test, dim=1)):
        similarity, index = (x @ train_n.T).topk(7)
        expected = torch.zeros(4).index_add_(0, labels[index], (similarity / 0.07).exp())
        assert torch.allclose(scores[i], expected, rtol=1e-5)


@pytest.mark.parametrize("model", CONV_FAMILIES)
def test_every_conv_family_has_a_default_layer_and_runs_features(model: str, tmp_path: Path) -> None:
    from cnnlab import build_datamodule, build_model, compose_config
    from cnnlab.analysis.common import run_analyses

    extra = ["data.image_size=16"] if model == "lecun1989" else []
    cfg = compose_config([f"model={model}", *extra, "analysis=[features]", "analysis.features.max_train=60",
                          "analysis.features.max_test=30", "analysis.features.pca=5",
                          "analysis.features.classifiers=[linear_svm,knn,dino_knn]"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    headline = run_analyses(cfg, tmp_path, ["features"], net=build_model(cfg), datamodule=datamodule)
    assert {"analysis/features/linear_svm_acc", "analysis/features/dino_knn_acc"} <= set(headline)
    report = json.loads((tmp_path / "analysis" / "features" / "features.json").read_text())
    assert report["train_images"] == 60 and report["test_images"] == 30
    assert report["layers"]["penultimate"]["taken"] == "input"


# --- confusion ---------------------------------------------------------------------------------------------------

def test_confusion_counts_sum_to_the_test_set_and_agree_with_test_acc(digits_run: Path) -> None:
    result = _analyze(digits_run, "analysis=[confusion]")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((digits_run / "analysis" / "confusion" / "confusion.json").read_text())
    matrix = np.array(report["matrix"])
    assert matrix.sum() == report["test_images"] == 360  # digits: a stratified 20 % of 1,797
    assert np.trace(matrix) / matrix.sum() == pytest.approx(results_of(digits_run)["test/acc"], abs=1e-6)
    assert report["errors"] == matrix.sum() - np.trace(matrix)
    pairs = report["most_confused"]
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)
    confidences = [m["confidence"] for m in report["misclassified"]]
    assert confidences == sorted(confidences, reverse=True)
    assert all(m["true"] != m["predicted"] for m in report["misclassified"])
    for png in report["figures"]:
        assert (digits_run / "analysis" / "confusion" / png).stat().st_size > 5_000


# --- bad input ---------------------------------------------------------------------------------------------------

NO_TORCH = ("import sys; from cnnlab.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")


def _without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_misspelt_analysis_lists_the_analyses_before_torch(digits_run: Path) -> None:
    result = _without_torch("analyze", str(digits_run), "analysis=[featurs]")
    assert result.returncode == 2, result.stderr
    assert "Did you mean analysis=features?" in result.stderr and "confusion, feature_maps, features" in result.stderr


def test_bad_analysis_options_fail_before_torch(digits_run: Path) -> None:
    result = _without_torch("analyze", str(digits_run), "analysis=[features]", "analysis.features.pca=1.5")
    assert result.returncode == 2 and "analysis.features.pca must be" in result.stderr
    result = _without_torch("analyze", str(digits_run), "analysis=[features]", "analysis.features.dino_kk=3")
    assert result.returncode == 2 and "analysis.features.dino_k" in result.stderr
    result = _without_torch("analyze", str(digits_run))
    assert result.returncode == 2 and "analysis=[features,confusion]" in result.stderr


def test_a_run_folder_without_checkpoint_says_so(digits_run: Path) -> None:
    shutil.rmtree(digits_run / "checkpoints")
    result = _without_torch("analyze", str(digits_run), "analysis=[features]")
    assert result.returncode == 2
    assert "has no checkpoint to analyse" in result.stderr
    result = _without_torch("analyze", str(digits_run.parent), "analysis=[features]")
    assert result.returncode == 2 and "not a cnnlab run folder" in result.stderr


def test_unknown_layer_lists_the_valid_ones(digits_run: Path) -> None:
    result = _analyze(digits_run, "analysis=[features]", "analysis.features.layers=[features.99]")
    assert result.returncode == 2
    assert "no layer features.99" in result.stderr and "features.4, features.5" in result.stderr


# --- real MNIST --------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs MNIST in ../shared/data")
def test_lenet5_mnist_features_close_to_the_head(tmp_path: Path) -> None:
    result = run_cli("train", "experiment=lenet5_mnist", f"data.root={SHARED_DATA}", "data.download=false",
                     "trainer.max_epochs=1", "trainer.enable_model_summary=false", "analysis=[features,confusion]",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(run_dir_of(result))
    head = results["analysis/features/head_acc"]
    assert head == pytest.approx(results["test/acc"], abs=1e-6) and head > 0.97
    assert results["analysis/features/linear_svm_acc"] >= head - 0.01
    assert results["analysis/features/knn_acc"] > 0.9
    assert results["analysis/features/dino_knn_acc"] > 0.9
    assert results["analysis/confusion/acc"] == pytest.approx(results["test/acc"], abs=1e-6)


def test_features_of_the_pretrained_network(digits_run: Path) -> None:
    """network=pretrained analyses model.weights (here a run folder: the run itself), not the trained checkpoint."""
    result = _analyze(digits_run, "analysis=[features]", "analysis.features.network=pretrained",
                      f"model.weights={digits_run}", "analysis.features.classifiers=[knn]")
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(digits_run)
    assert results["analysis/features/head_acc"] == pytest.approx(results["test/acc"], abs=1e-6)
    assert json.loads((digits_run / "analysis" / "features" / "features.json").read_text())["network"] == "pretrained"


def test_analyses_at_the_end_of_training_reach_results_and_wandb(tmp_path: Path) -> None:
    result = run_cli("train", "trainer.max_epochs=1", "trainer.enable_model_summary=false", "logger=[csv,wandb]",
                     "analysis=[confusion]", cwd=tmp_path, env={"WANDB_MODE": "offline", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(result)
    results = results_of(run_dir)
    assert results["status"] == "completed"
    assert results["analysis/confusion/acc"] == pytest.approx(results["test/acc"], abs=1e-6)
    logged = {p.name.split("_")[0] for p in run_dir.glob("wandb/*/files/media/images/analysis/confusion/*.png")}
    assert {"confusion", "misclassified", "per"} <= logged


def test_a_wrong_layer_fails_before_training(tmp_path: Path) -> None:
    result = run_cli("train", "analysis=[features]", "analysis.features.layers=[features.99]", cwd=tmp_path)
    assert result.returncode == 1
    assert "no layer features.99" in result.stderr and "classifier.4" in result.stderr
    results = results_of(run_dir_of(result))
    assert results["status"] == "failed" and not results.get("history")


def test_analyses_read_the_per_sample_loader_pipeline_too(tmp_path: Path) -> None:
    from cnnlab import build_datamodule, build_model, compose_config
    from cnnlab.analysis.common import run_analyses

    cfg = compose_config(["data.pipeline=loader", "analysis=[features,confusion]", "analysis.features.max_train=100",
                          "analysis.features.max_test=50", "analysis.features.classifiers=[knn]"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    headline = run_analyses(cfg, tmp_path, ["features", "confusion"], net=build_model(cfg), datamodule=datamodule)
    report = json.loads((tmp_path / "analysis" / "confusion" / "confusion.json").read_text())
    assert sum(map(sum, report["matrix"])) == 360
    assert headline["analysis/confusion/acc"] == report["acc"]
    assert json.loads((tmp_path / "analysis" / "features" / "features.json").read_text())["train_images"] == 100
