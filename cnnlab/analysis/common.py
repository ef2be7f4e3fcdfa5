"""What every analysis needs: the network with its checkpoint's weights, the run's data in evaluation form
(normalised, never augmented) in batches, a progress bar, and the run of several analyses into one run folder."""

from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cnnlab.analysis import ANALYSES
from cnnlab.checkpoint_file import read_checkpoint
from cnnlab.data import ImageDataModule, build_datamodule
from cnnlab.data.datamodule import TransformedSubset
from cnnlab.data.tensor_path import ImageTensors
from cnnlab.errors import ConfigError
from cnnlab.models import build_model
from cnnlab.record import read_results, write_json_atomically

log = logging.getLogger(__name__)

ANALYSIS_DIR = "analysis"


def choose_device(cfg: DictConfig) -> torch.device:
    """The run's accelerator: CUDA when it trained on a GPU (or ``auto``) and one is here, else the CPU."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def network_for_analysis(cfg: DictConfig, num_classes: int, checkpoint: str | Path | None,
                         pretrained: bool = False) -> nn.Module:
    """The run's network in eval mode: with ``checkpoint``'s weights, or (``pretrained``) with the weights the run
    started from (``model.weights``). Nothing is frozen or compiled: analyses hook into the plain module."""
    # only what the model needs: the rest may hold ${hydra:...} values that resolve only inside a Hydra job
    cfg = OmegaConf.create({key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "data")})
    with open_dict(cfg):
        cfg.data.num_classes = num_classes
        cfg.model.freeze = []
        cfg.model.compile = False
        cfg.model.channels_last = False
        if not pretrained:
            cfg.model.weights = None
    net = build_model(cfg)
    if not pretrained:
        if checkpoint is None:
            raise ConfigError("This run has no checkpoint to analyse (no best checkpoint in results.json and no "
                              "checkpoints/last.ckpt): it stopped before its first epoch ended.")
        state = read_checkpoint(checkpoint, purpose="cnnlab analyze")
        weights = state.get("state_dict", state)
        weights = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")} or weights
        net.load_state_dict(weights)
    return net.eval()


@dataclass
class AnalysisContext:
    """One trained network and its data, shared by the analyses of one call."""

    cfg: DictConfig
    net: nn.Module  # in eval mode, on ``device``
    datamodule: ImageDataModule  # set up
    device: torch.device
    run_dir: Path
    checkpoint: str | None
    out_dir: Path = field(default=Path("."))  # <run_dir>/analysis/<name>/, set per analysis

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in (self.datamodule.classes or [])]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def title(self) -> str:
        return f"{self.cfg.model.name} on {self.cfg.data.name}"

    def split(self, name: str) -> Any:
        """The ``train`` or ``test`` split, as the data module holds it (train without augmentation)."""
        return {"train": self.datamodule.train_set, "test": self.datamodule.test_set}[name]

    def labels(self, name: str, indices: Tensor | None = None) -> Tensor:
        data = self.split(name)
        if isinstance(data, ImageTensors):
            labels = data.labels.cpu()
        else:  # TransformedSubset over a torchvision dataset
            from cnnlab.data.sources import labels_of

            all_labels = labels_of(data.dataset)
            labels = all_labels[torch.as_tensor(data.indices)] if data.indices is not None else all_labels
        return labels if indices is None else labels[indices]

    def size(self, name: str) -> int:
        return len(self.split(name))

    def batches(self, name: str, batch_size: int, indices: Tensor | None = None, desc: str | None = None
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalised images and labels of ``name`` (only ``indices`` of it, when given) on ``device``, in
        order, ``batch_size`` at a time, with a progress bar on a terminal."""
        from tqdm.auto import tqdm

        data = self.split(name)
        if isinstance(data, ImageTensors):
            if indices is not None:
                data = data.subset(indices.to(data.labels.device))
            pipeline = self.datamodule.batch_pipeline
            assert pipeline is not None
            chunks: Any = ((data.images[i:i + batch_size], data.labels[i:i + batch_size])
                           for i in range(0, len(data), batch_size))
            total = -(-len(data) // batch_size)
        else:
            evaluation = TransformedSubset(data.dataset, data.indices, self.datamodule.val_set.transform)
            if indices is not None:
                evaluation = torch.utils.data.Subset(evaluation, indices.tolist())
            chunks = DataLoader(evaluation, batch_size=batch_size, shuffle=False,
                                num_workers=self.datamodule.spec["num_workers"])
            pipeline = None
            total = len(chunks)
        for images, labels in tqdm(chunks, total=total, desc=desc or name, leave=False, unit="batch"):
            images = images.to(self.device, non_blocking=True)
            if pipeline is not None:
                images = pipeline(images, train=False)
            yield images, labels.to(self.device)

    def raw_images(self, name: str, indices: Tensor) -> Tensor:
        """Images ``indices`` of ``name`` for display: float (N, C, H, W) in [0, 1], as the network sees them
        before normalisation."""
        mean = torch.tensor(self.datamodule.spec["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(self.datamodule.spec["std"]).view(1, -1, 1, 1)
        batches = [images.cpu() for images, _ in self.batches(name, 256, indices, desc="images")]
        images = torch.cat(batches) if batches else torch.empty(0)
        return (images * std + mean).clamp(0, 1)

    def subset(self, name: str, limit: int | None, seed: int | None = None) -> Tensor | None:
        """A fixed, seeded random subset of ``limit`` indices of the split (sorted), or None for all of it."""
        n = self.size(name)
        if limit is None or limit >= n:
            return None
        generator = torch.Generator().manual_seed(self.cfg.seed if seed is None else seed)
        return torch.randperm(n, generator=generator)[:limit].sort().values


class NetworkStateKept:
    """``with NetworkStateKept(net):`` — whatever an analysis does to ``net`` inside (eval mode for attacks,
    ``requires_grad`` switched on for gradients, hooks registered), each module's train/eval mode and each
    parameter's ``requires_grad`` are as before afterwards, and gradients it left in ``.grad`` are cleared.
    ``hook_count(net)`` is what tests compare before and after: an analysis must remove every hook it adds."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.modes = [(module, module.training) for module in net.modules()]
        self.flags = [(param, param.requires_grad, param.grad) for param in net.parameters()]

    def __enter__(self) -> nn.Module:
        return self.net

    def __exit__(self, *exc_info: object) -> None:
        for module, training in self.modes:
            module.training = training
        for param, requires_grad, grad in self.flags:
            param.requires_grad_(requires_grad)
            param.grad = grad


def hook_count(net: nn.Module) -> int:
    """The forward, forward-pre and backward hooks registered on ``net``'s modules (torch keeps them in ordered
    dicts on each module): equal before and after an analysis when it removed all it added."""
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, name, {})) for module in net.modules() for name in names)


def write_json(path: Path, data: Any) -> None:
    write_json_atomically(path, data)


# --- figures -----------------------------------------------------------------------------------------------------

FIGURE_DPI = 100


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed), imported when a figure is drawn:
    importing an analysis, or checking a config, does not load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, title: str | None = None, title_size: float = 10, *, tight: bool = True,
                rect: tuple[float, float, float, float] | None = None, after_layout: Callable[[], Any] | None = None,
                bbox_inches: str | None = None) -> Path:
    """Finish and write an analysis figure: its ``title`` above everything (``suptitle``, ``title_size`` points),
    ``tight_layout`` (within ``rect``, when given; ``tight=False`` for a figure laid out by hand), then
    ``after_layout()`` (a colour bar that takes its room after the layout), then the PNG at ``FIGURE_DPI``, and
    the figure closed. One place decides the backend, the resolution and the closing, so that every analysis PNG
    is saved alike and no figure stays open in a long run of analyses."""
    if title is not None:
        fig.suptitle(title, fontsize=title_size)
    if tight:
        fig.tight_layout(**({} if rect is None else {"rect": rect}))
    if after_layout is not None:
        after_layout()
    fig.savefig(path, dpi=FIGURE_DPI, **({} if bbox_inches is None else {"bbox_inches": bbox_inches}))
    pyplot().close(fig)
    return path


def check_analyses(cfg: DictConfig, net: nn.Module) -> None:
    """The checks of the analyses ``cfg`` lists that need the built network (layer names), run before training so
    that a wrong name fails in seconds rather than after the run."""
    import inspect

    for name in cfg.get("analysis") or {}:
        module = importlib.import_module(ANALYSES[name])
        if hasattr(module, "check"):
            options = OmegaConf.to_container(cfg.analysis[name], resolve=True)
            if "example" in inspect.signature(module.check).parameters:  # checks that need a forward pass
                device = next((p.device for p in net.parameters()), torch.device("cpu"))
                example = torch.randn(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size,
                                      generator=torch.Generator().manual_seed(0)).to(device)
                module.check(net, options, example=example)
            else:
                module.check(net, options)


def run_analyses(cfg: DictConfig, run_dir: str | Path, names: Sequence[str], checkpoint: str | None = None,
                 net: nn.Module | None = None, datamodule: ImageDataModule | None = None) -> dict[str, float]:
    """Run the analyses ``names`` (options from ``cfg.analysis``) on the run in ``run_dir`` and return their
    headline numbers as ``{"analysis/<name>/<metric>": value}``.

    ``net`` and ``datamodule`` are the trained network and data module at the end of training; without them
    (``cnnlab analyze``) both are built from ``cfg`` and ``checkpoint``.
    """
    run_dir = Path(run_dir)
    if datamodule is None:
        datamodule = build_datamodule(cfg)
        datamodule.prepare_data()
    datamodule.setup("fit")
    device = choose_device(cfg)
    trained = net
    headline: dict[str, float] = {}
    for name in names:
        if name not in ANALYSES:
            raise ConfigError(f"Unknown analysis '{name}'. Analyses: {', '.join(ANALYSES)}.")
        options: Mapping[str, Any] = OmegaConf.to_container(cfg.analysis[name], resolve=True)  # type: ignore
        pretrained = options.get("network") == "pretrained"
        if pretrained:
            net = network_for_analysis(cfg, datamodule.num_classes, None, pretrained=True)
        elif trained is not None:
            net = trained
        else:
            trained = net = network_for_analysis(cfg, datamodule.num_classes, checkpoint)
        was_training = net.training
        net.eval().to(device)
        context = AnalysisContext(cfg, net, datamodule, device, run_dir, checkpoint,
                                  out_dir=run_dir / ANALYSIS_DIR / name)
        context.out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        module = importlib.import_module(ANALYSES[name])
        metrics = module.run(context, options)  # each analysis decides whether it needs gradients
        seconds = round(time.perf_counter() - started, 3)
        net.train(was_training)
        metrics["time_s"] = seconds
        log.info("analysis %s (%.1f s): %s", name, seconds,
                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "time_s"))
        headline.update({f"analysis/{name}/{k}": v for k, v in metrics.items()})
    return headline


def merge_into_results(run_dir: Path, headline: Mapping[str, float]) -> dict[str, Any]:
    """Add ``headline`` to the run's ``results.json`` (replaced atomically); returns the new contents."""
    results = read_results(run_dir) or {}
    results.update(headline)
    write_json_atomically(run_dir / "results.json", results)
    return results


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def analyze_run(run_dir: Path, cfg: DictConfig, names: Sequence[str], checkpoint: str | None) -> dict[str, float]:
    """``cnnlab analyze``: run ``names`` on the finished run in ``run_dir`` and merge the headline numbers into its
    ``results.json``; returns them."""
    headline = run_analyses(cfg, run_dir, names, checkpoint=checkpoint)
    merge_into_results(run_dir, headline)
    return headline


def log_to_wandb(loggers: Sequence[Any], run_dir: Path, names: Sequence[str], headline: Mapping[str, Any]) -> None:
    """At the end of training with ``logger=[...,wandb]``: each analysis's PNGs as images (``analysis/<name>/<png>``)
    and its headline numbers in the W&B run's summary, beside the test metrics."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = logger.experiment
        images = {f"analysis/{name}/{png.stem}": wandb.Image(str(png))
                  for name in names for png in sorted((run_dir / ANALYSIS_DIR / name).glob("*.png"))}
        if images:
            run.log(images)
        for key, value in headline.items():
            if isinstance(value, (int, float)):
                run.summary[key] = value
