"""The classification LightningModule: any ``nn.Module`` trained with a configured loss, optimizer and schedule."""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cnnlab.attacks import Attack, PixelModel
from cnnlab.training.losses import build_loss, l1_penalty
from cnnlab.training.optim import build_optimizer, build_schedule
from cnnlab.training.sdlm import DiagonalLevenbergMarquardt, output_curvature

TOP5_MIN_CLASSES = 6  # top-5 accuracy is only informative with more than five classes


RUN_CONFIG_KEY = "cnnlab_config"  # where checkpoints keep the run's resolved config, for ``cnnlab eval``
EPOCH_MEANS_KEY = "cnnlab_epoch_means"  # the training epoch's running loss and accuracy, for exact resumption


def _accuracies(num_classes: int, prefix: str) -> MetricCollection:
    # validate_args=False: the inputs are our own logits and labels; checking them costs more than the update.
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False)}
    if num_classes >= TOP5_MIN_CLASSES:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", validate_args=False)
    return MetricCollection(metrics, prefix=prefix)


class EpochMean:
    """Mean of a per-image value over an epoch, kept as a running sum in a tensor on the value's device: one
    in-place add per batch, no per-step logging cost and no host-device sync until the epoch ends."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add_mean(self, batch_mean: Tensor, n: int) -> None:
        """Add a batch of ``n`` images given the value's mean over it (a loss)."""
        self._add(batch_mean, weight=n, n=n)

    def add_sum(self, batch_sum: Tensor, n: int) -> None:
        """Add a batch of ``n`` images given the value's sum over it (a count of correct predictions)."""
        self._add(batch_sum, weight=1, n=n)

    def _add(self, value: Tensor, weight: int, n: int) -> None:
        if self.total is None:
            self.total = torch.zeros((), device=value.device)
        self.total.add_(value.detach(), alpha=weight)
        self.count += n

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.total, self.count = state["total"], int(state["count"])

    def pop(self) -> Tensor | None:
        mean = None if self.total is None else self.total / self.count
        self.total, self.count = None, 0
        return mean


class ImageClassifier(pl.LightningModule):
    """Trains ``model`` to map images to class scores.

    Logs, once per epoch, ``train/loss_epoch``, ``val/loss``, ``test/loss`` and ``{train,val,test}/acc`` (top-1,
    a fraction), plus ``{val,test}/acc_top5`` with six or more classes; and ``train/loss`` every
    ``log_every_n_steps``.
    Metrics accumulate in tensors between those points: a ``self.log`` per batch would cost more than a small
    network's whole training step, and so would a torchmetrics update, which is why training top-1 is a running
    mean (validation and test use torchmetrics, for top-5 and DDP reduction). The optimizer, scheduler and loss
    are plain mappings with the keys of their config groups; ``run_config``, when given, is saved in every
    checkpoint under ``RUN_CONFIG_KEY`` so that ``cnnlab eval`` needs nothing but the file.

    ``adversarial`` (the ``training.adversarial`` mapping, with ``attack`` fgsm or pgd) turns on adversarial
    training (Goodfellow et al. 2015, Madry et al. 2018): the first ``fraction`` of every training batch (batches
    are shuffled) is replaced by its adversarial version, made in pixel space with the dataset's ``normalisation``
    (mean, std) undone and redone around the network (``cnnlab.attacks.PixelModel``).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        loss: Mapping[str, Any],
        run_config: Mapping[str, Any] | None = None,
        adversarial: Mapping[str, Any] | None = None,
        normalisation: tuple[list[float], list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "run_config"])
        self.model = model
        self.attack, self.adversarial_fraction = None, 0.0
        if adversarial is not None and adversarial.get("attack"):
            if normalisation is None:
                raise ValueError("adversarial training needs the data's normalisation (mean, std)")
            self.attack = Attack(adversarial["attack"], float(adversarial["epsilon"]), steps=adversarial["steps"],
                                 step_size=adversarial["step_size"], random_start=adversarial["random_start"])
            self.adversarial_fraction = float(adversarial["fraction"])
            # A plain attribute holding a tuple: registered as a submodule, the wrapper would put a second copy of
            # the network's weights in every checkpoint.
            self._pixel_model = (PixelModel(model, *normalisation),)
        self.criterion = build_loss(loss["name"], num_classes, loss["label_smoothing"], loss.get("targets"),
                                    loss.get("rubbish_penalty", 0.1))
        self.l1 = loss["l1"]
        self.run_config = dict(run_config) if run_config is not None else None
        self.train_accuracy = EpochMean()
        self.val_metrics = _accuracies(num_classes, "val/")
        self.test_metrics = _accuracies(num_classes, "test/")
        # data.full_test: a second test dataloader, the whole test split beside the subset the recipe tests on
        self.test_full_metrics = _accuracies(num_classes, "test_full/")
        self.losses = {"train": EpochMean(), "val": EpochMean(), "test": EpochMean(), "test_full": EpochMean()}

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` (the running hook's name, or None) before and after every hook it
        # calls, ~44 times a training step. nn.Module.__setattr__ first checks whether the value is a Parameter,
        # a Module or a buffer, ~1 µs each time (50 µs a step); a name is none of those, and for anything else
        # that method ends in this plain store.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def adversarial_batch(self, images: Tensor, labels: Tensor) -> Tensor:
        """``images`` (normalised) with the first ``fraction`` of them replaced by their adversarial versions."""
        n = round(self.adversarial_fraction * len(images))
        if self.attack is None or n == 0:
            return images
        pixel_model = self._pixel_model[0].to(images.device)
        # The attack runs on the network in eval mode, then training goes on in train mode. In train mode batch
        # norm would normalise the attack's inputs with their own batch statistics and fold every one of PGD's
        # extra forward passes into its running statistics, and dropout would draw a new mask at each step: the
        # attack would chase a different network at each step, and not the one that is evaluated and attacked
        # at test time.
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            adversarial = self.attack(pixel_model, pixel_model.pixels(images[:n].detach()), labels[:n])
        finally:
            for module, training in modes:
                module.training = training
        return torch.cat([pixel_model.normalise(adversarial).to(images.dtype), images[n:]])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self.attack is not None:
            images = self.adversarial_batch(images, labels)
        output = self(images)
        if isinstance(output, tuple):
            # GoogLeNet / Inception-v3 in training: (logits, auxiliary classifiers' logits...), weighted as in
            # their papers.
            logits, *auxiliary = output
            loss = self.criterion(logits, labels) + getattr(self.model, "aux_loss_weight", 0.0) * sum(
                self.criterion(aux, labels) for aux in auxiliary if aux is not None)
        else:
            logits = output
            loss = self.criterion(logits, labels)
        if self.l1:
            loss = loss + self.l1 * l1_penalty(self.model)
        self.train_accuracy.add_sum((logits.detach().argmax(1) == labels).sum(), len(labels))
        self.losses["train"].add_mean(loss, len(labels))
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps Lightning writes logs on
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        if self.trainer.is_last_batch:
            # Every rank sees as many images, so the mean of the ranks' means is the mean over all of them.
            accuracy = self.train_accuracy.pop()
            if accuracy is not None:
                self.log("train/acc", accuracy, on_step=False, on_epoch=True, sync_dist=True)
            self._log_loss("train", "train/loss_epoch")
        return loss

    def _log_loss(self, stage: str, name: str) -> None:
        mean = self.losses[stage].pop()
        if mean is not None:
            self.log(name, mean, on_step=False, on_epoch=True, sync_dist=True, prog_bar=stage == "val")

    def _log_epoch(self, stage: str, metrics: MetricCollection, loss_name: str) -> None:
        values = metrics.compute()  # torchmetrics reduces across DDP processes itself
        metrics.reset()
        self._log_loss(stage, loss_name)
        # Already reduced across processes by torchmetrics; sync_dist only keeps Lightning from warning so.
        self.log_dict(values, on_step=False, on_epoch=True, prog_bar=stage == "val", sync_dist=True)

    def _evaluate(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, stage: str) -> None:
        images, labels = batch
        logits = self(images)
        self.losses[stage].add_mean(self.criterion(logits, labels), len(labels))
        metrics.update(logits, labels)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics, loss_name="val/loss")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:
            self._evaluate(batch, self.test_metrics, "test")
        else:  # the whole test split (data.full_test)
            self._evaluate(batch, self.test_full_metrics, "test_full")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics, loss_name="test/loss")
        if self.losses["test_full"].count:
            self._log_epoch("test_full", self.test_full_metrics, loss_name="test_full/loss")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint[RUN_CONFIG_KEY] = self.run_config
        # A checkpoint taken within an epoch carries the epoch's running means, so that a run resumed from it
        # reports the same epoch metrics as one that was never interrupted.
        checkpoint[EPOCH_MEANS_KEY] = {"train_acc": self.train_accuracy.state_dict(),
                                       "train_loss": self.losses["train"].state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        means = checkpoint.get(EPOCH_MEANS_KEY)
        if means is not None:
            self.train_accuracy.load_state_dict(means["train_acc"])
            self.losses["train"].load_state_dict(means["train_loss"])

    def on_train_epoch_start(self) -> None:
        # optimizer=sdlm: each weight's curvature, re-estimated on a sample of training patterns before each pass
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        if isinstance(optimizer, DiagonalLevenbergMarquardt):
            images = self.trainer.datamodule.training_sample(optimizer.samples, epoch=self.current_epoch)
            loss = self.hparams.loss
            optimizer.estimate_curvature(self.model, images.to(self.device), output_curvature(
                loss["name"], self.hparams.num_classes, loss.get("targets"), loss.get("rubbish_penalty", 0.1)))

    def configure_optimizers(self) -> Any:
        # Frozen layers (model.freeze) are left out, so weight decay does not shrink them either.
        trainable = [p for p in self.parameters() if p.requires_grad]
        mixed_precision = str(self.trainer.precision).endswith("-mixed")
        clipping = bool(self.trainer.gradient_clip_val)
        optimizer = build_optimizer(trainable, self.hparams.optimizer, fused_allowed=not (mixed_precision and clipping))
        schedule = self.hparams.scheduler
        total = self.trainer.max_epochs if schedule["interval"] == "epoch" else self.trainer.estimated_stepping_batches
        lr_scheduler = build_schedule(optimizer, schedule, int(total))
        if lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}
