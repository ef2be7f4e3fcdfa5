"""The analyses that show what a network sees: filters, feature_maps and cam (cnnlab/analysis/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import results_of, run_cli, run_dir_of

VISUAL = ("filters", "feature_maps", "cam")


@pytest.fixture(scope="module")
def digits_context(trained_digits_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """The session's trained digits LeNet-5 (BN) as ``cnnlab analyze`` loads it, with its data."""
    from cnnlab.analysis.common import AnalysisContext, network_for_analysis
    from cnnlab.analysis.request import prepare
    from cnnlab.data import build_datamodule

    request = prepare([str(trained_digits_run), f"analysis=[{','.join(VISUAL)}]"])
    datamodule = build_datamodule(request.config)
    datamodule.setup("fit")
    net = network_for_analysis(request.config, datamodule.num_classes, request.checkpoint)
    out = tmp_path_factory.mktemp("visual")
    return AnalysisContext(request.config, net, datamodule, torch.device("cpu"), out, request.checkpoint, out)


def _test_images(context, count: int = 12) -> torch.Tensor:
    images, _ = next(context.batches("test", count))
    return images


# --- Grad-CAM, Grad-CAM++ and CAM against references ---------------------------------------------------------------

def test_gradcam_equals_a_direct_autograd_computation(digits_context) -> None:
    """Grad-CAM at features.6 (the ReLU after C3) of the trained network, against the gradient of the class score
    with respect to that layer's output taken directly (the network run in two halves, no hooks)."""
    from cnnlab.analysis.cam import class_maps

    net = digits_context.net.eval()
    images = _test_images(digits_context)
    with torch.no_grad():
        classes = net(images).topk(3, dim=1).indices
    maps, _ = class_maps(net, images, "features.6", classes, "gradcam")
    assert maps.shape == (12, 3, 10, 10)
    for t in range(3):
        activation = net.features[:7](net.retina(images)).detach().requires_grad_(True)
        logits = net.classifier(net.features[7:](activation))
        (gradient,) = torch.autograd.grad(logits.gather(1, classes[:, t:t + 1]).sum(), activation)
        expected = torch.relu((gradient.mean(dim=(2, 3))[:, :, None, None] * activation).sum(dim=1)).detach()
        assert expected.amax() > 0
        assert torch.allclose(maps[:, t], expected, atol=1e-5 * float(expected.amax()), rtol=1e-4)


def test_gradcampp_is_pytorch_grad_cams_formula(digits_context) -> None:
    """Grad-CAM++ against a NumPy transcription of pytorch-grad-cam's GradCAMPlusPlus.get_cam_weights on the same
    activations and gradients (taken without cnnlab's hooks), and it differs from Grad-CAM."""
    from cnnlab.analysis.cam import class_maps

    net = digits_context.net.eval()
    images = _test_images(digits_context, 8)
    with torch.no_grad():
        classes = net(images).argmax(dim=1, keepdim=True)
    maps, _ = class_maps(net, images, "features.6", classes, "gradcampp")
    activation = net.features[:7](net.retina(images)).detach().requires_grad_(True)
    logits = net.classifier(net.features[7:](activation))
    (gradient,) = torch.autograd.grad(logits.gather(1, classes).sum(), activation)
    a, g = activation.detach().numpy().astype(np.float64), gradient.numpy().astype(np.float64)
    aij = g**2 / (2 * g**2 + a.sum(axis=(2, 3))[:, :, None, None] * g**3 + 1e-7)
    aij = np.where(g != 0, aij, 0)
    weights = (np.maximum(g, 0) * aij).sum(axis=(2, 3))
    expected = np.maximum((weights[:, :, None, None] * a).sum(axis=1), 0)
    assert np.allclose(maps[:, 0].numpy(), expected, atol=1e-5 * expected.max(), rtol=1e-3)
    gradcam, _ = class_maps(net, images, "features.6", classes, "gradcam")
    assert not torch.allclose(gradcam, maps)


def test_cam_equals_gradcam_times_the_map_area_on_a_gap_network() -> None:
    """The Grad-CAM paper's proof: for global average pooling + one linear layer, dy_c/dA_k(i,j) = w_ck / Z, so
    Grad-CAM at the averaged map is CAM / Z (Z = h * w)."""
    from cnnlab import build_model, compose_config
    from cnnlab.analysis.cam import averaged_map, class_maps, resolve_layer
    from cnnlab.analysis.layers import example_input

    cfg = compose_config(["model=resnet_cifar", "data=mnist"])
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    example = example_input(1, 28)
    layer, head = resolve_layer(net, {"method": "cam"}, example)
    assert layer == "stacks.2" and head is net.fc and averaged_map(net, layer, example) is net.fc
    images = torch.randn(4, 1, 28, 28)
    classes = torch.tensor([[0, 3], [1, 4], [2, 5], [9, 8]])
    cam, _ = class_maps(net, images, layer, classes, "cam", head)
    gradcam, _ = class_maps(net, images, layer, classes, "gradcam")
    assert cam.shape == (4, 2, 7, 7) and cam.amax() > 0
    assert torch.allclose(gradcam * 49, cam, atol=1e-5 * float(cam.amax()), rtol=1e-4)


def test_maps_are_placed_where_the_units_look() -> None:
    """LeNet-5 on 28x28 MNIST: C3's 10x10 units are centred at 2j + 4.5 pixels (5x5 convolutions without padding,
    2x2 pooling, the digit padded to 32x32), not where a plain resize to 28x28 would put them (2.8j + 0.9)."""
    from cnnlab import build_model, compose_config
    from cnnlab.analysis.cam import place, unit_centres
    from cnnlab.analysis.layers import example_input

    torch.manual_seed(0)
    net = build_model(compose_config(["model=lenet5", "data=mnist"])).eval()
    geometry = unit_centres(net, "features.4", example_input(1, 28))
    for axis in ("y", "x"):
        slope, offset = geometry[axis]
        assert slope == pytest.approx(2.0, abs=0.01) and offset == pytest.approx(4.5, abs=0.05)
    one_unit = torch.zeros(10, 10)
    one_unit[3, 6] = 1.0
    heat = place(one_unit, geometry, 28, 28, 1)
    assert np.unravel_index(heat.argmax(), heat.shape) == (round(2 * 3 + 4.5), round(2 * 6 + 4.5))


# --- the three analyses on the trained digits run -----------------------------------------------------------------

@pytest.mark.parametrize("name", VISUAL)
def test_an_analysis_leaves_the_network_as_it_was(digits_context, name: str) -> None:
    """Modes, requires_grad flags, .grad and hooks are as before, whatever state the network was left in."""
    import importlib

    from cnnlab.analysis import ANALYSES
    from cnnlab.analysis.common import hook_count

    net = digits_context.net
    net.eval()
    net.classifier.train()  # a mixed state: dropout in train mode, the rest in eval
    net.features[0].weight.requires_grad_(False)
    kept = net.register_forward_hook(lambda *args: None)
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    hooks = hook_count(net)
    options = {"max_layers": 2, "images": 2, "stats_images": 50, "one_class_images": 2, "top": 2}
    digits_context.out_dir = digits_context.run_dir / name
    digits_context.out_dir.mkdir(exist_ok=True)
    try:
        importlib.import_module(ANALYSES[name]).run(digits_context, options)
        assert [m.training for m in net.modules()] == modes
        assert [p.requires_grad for p in net.parameters()] == flags
        assert all(p.grad is None for p in net.parameters())
        assert hook_count(net) == hooks
    finally:
        kept.remove()
        net.features[0].weight.requires_grad_(True)
        net.eval()


def test_analyze_draws_filters_feature_maps_and_cams(trained_digits_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / trained_digits_run.name
    shutil.copytree(trained_digits_run, run_dir, ignore=shutil.ignore_patterns("analysis"))
    result = run_cli("analyze", str(run_dir), "analysis=[filters,feature_maps,cam]", "analysis.cam.images=4",
                     "analysis.cam.one_class=7", "analysis.cam.one_class_images=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(run_dir)
    out = run_dir / "analysis"
    filters = json.loads((out / "filters" / "filters.json").read_text())
    assert list(filters["layers"]) == ["features.0", "features.4", "features.8"]
    assert filters["layers"]["features.0"]["shown"] == [6, 1]
    maps = json.loads((out / "feature_maps" / "feature_maps.json").read_text())
    assert {n: m["shape"] for n, m in maps["layers"].items()} == {"features.2": [6, 28, 28],
                                                                  "features.6": [16, 10, 10]}
    assert 0 < results["analysis/feature_maps/features.6/active_fraction"] < 1
    cam = json.loads((out / "cam" / "cam.json").read_text())
    assert cam["method"] == "gradcam" and cam["layer"] == "features.6" and cam["map_size"] == [10, 10]
    assert [image["true"] for image in cam["images"]] == ["0", "1", "2", "3"]  # per_class: one of each class
    for image in cam["images"]:
        probabilities = [entry["probability"] for entry in image["top"]]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert cam["one_class"]["class"] == "7" and len(cam["one_class"]["indices"]) == 4
    top1 = np.mean([image["top"][0]["probability"] for image in cam["images"]])
    assert results["analysis/cam/top1_prob_mean"] == pytest.approx(top1, rel=1e-6) and top1 > 0.8
    assert 0 <= results["analysis/cam/average_drop"] <= 100
    for name in VISUAL:
        assert results[f"analysis/{name}/time_s"] > 0
    pngs = [*filters["figures"], *maps["figures"], *cam["figures"]]
    assert len(pngs) == 3 + 3 + 2
    for folder, png in zip(["filters"] * 3 + ["feature_maps"] * 3 + ["cam"] * 2, pngs):
        assert (out / folder / png).stat().st_size > 10_000


def test_locally_connected_kernels_are_laid_out_by_position(tmp_path: Path) -> None:
    """LeCun 1989 Net-3: each H1 unit's own 3x3 kernel, at its position: the kernel drawn at (r, c) is the one
    the layer applies there (checked against the layer's output on a real input)."""
    from cnnlab import build_datamodule, build_model, compose_config
    from cnnlab.analysis.common import run_analyses
    from cnnlab.analysis.filters import local_kernels

    cfg = compose_config(["model=lecun1989", "model.variant=net3", "data.image_size=16", "analysis=[filters]"])
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    run_analyses(cfg, tmp_path, ["filters"], net=net, datamodule=datamodule)
    report = json.loads((tmp_path / "analysis" / "filters" / "filters.json").read_text())
    assert report["layers"]["hidden.0"] | {"figure": None} == {
        "figure": None, "positions": [8, 8], "kernel": [1, 3, 3], "abs_max": pytest.approx(
            float(net.hidden[0].weight.detach().abs().max())), "type": "LocallyConnected2d"}
    assert (tmp_path / "analysis" / "filters" / "local_hidden_0.png").stat().st_size > 5_000
    layer = net.hidden[0]
    x = torch.randn(1, 1, 16, 16)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    kernels = local_kernels(layer)
    with torch.no_grad():
        out = layer(x)
    for r, c in ((0, 0), (3, 5), (7, 2)):
        patch = padded[0, :, 2 * r:2 * r + 3, 2 * c:2 * c + 3].numpy()
        expected = (patch * kernels[r, c, 0]).sum() + float(layer.bias.detach()[0, r, c])
        assert float(out[0, 0, r, c]) == pytest.approx(expected, abs=1e-5)


# --- bad input ---------------------------------------------------------------------------------------------------

def test_cam_on_a_network_without_global_average_pooling_says_grad_cam_works(trained_digits_run: Path,
                                                                             tmp_path: Path) -> None:
    run_dir = tmp_path / trained_digits_run.name
    shutil.copytree(trained_digits_run, run_dir, ignore=shutil.ignore_patterns("analysis"))
    result = run_cli("analyze", str(run_dir), "analysis=[cam]", "analysis.cam.method=cam", cwd=tmp_path)
    assert result.returncode == 2
    assert "global average pooling" in result.stderr and "Grad-CAM works for it" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_or_mapless_layers_list_the_valid_ones(digits_context) -> None:
    from cnnlab.analysis import cam, feature_maps, filters
    from cnnlab.analysis.layers import example_input
    from cnnlab.errors import ConfigError

    net = digits_context.net
    example = example_input(1, 8)
    with pytest.raises(ConfigError, match=r"analysis.cam.layer: this ModernLeNet5 has no layer features.99\. "
                                          r"Its layers .*features.5, features.6"):
        cam.check(net, {"layer": "features.99"}, example=example)
    with pytest.raises(ConfigError, match=r"no layer features.99"):
        filters.check(net, {"layers": ["features.0", "features.99"]})
    with pytest.raises(ConfigError, match=r"classifier.1 gives no map .* its conv stages: features.2, features.6"):
        feature_maps.check(net, {"layers": ["classifier.1"]}, example=example)
    with pytest.raises(ConfigError, match=r"analysis.cam.method=cam is defined at the map the network averages"):
        from cnnlab import build_model, compose_config

        resnet = build_model(compose_config(["model=resnet_cifar"])).eval()
        cam.check(resnet, {"method": "cam", "layer": "stacks.1"}, example=example_input(1, 8))


def test_a_wrong_cam_request_fails_before_training(tmp_path: Path) -> None:
    result = run_cli("train", "analysis=[cam]", "analysis.cam.method=cam", cwd=tmp_path)
    assert result.returncode == 1
    assert "Grad-CAM works for it" in result.stderr
    results = results_of(run_dir_of(result))
    assert results["status"] == "failed" and not results.get("history")


def test_bad_visual_options_fail_before_torch(trained_digits_run: Path) -> None:
    from test_analysis import _without_torch

    result = _without_torch("analyze", str(trained_digits_run), "analysis=[cam]", "analysis.cam.method=gradcam2")
    assert result.returncode == 2 and "analysis.cam.method must be one of" in result.stderr
    result = _without_torch("analyze", str(trained_digits_run), "analysis=[feature_maps]",
                            "analysis.feature_maps.indices=[-1]")
    assert result.returncode == 2 and "analysis.feature_maps.indices" in result.stderr
