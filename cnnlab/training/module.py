"""The classification LightningModule: any ``nn.Module`` trained with a configured loss, optimizer and schedule."""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cnnlab.training.losses import build_loss, l1_penalty
from cnnlab.training.optim import build_optimizer, build_schedule

TOP5_MIN_CLASSES = 6  # top-5 accuracy is only informative with more than five classes


def _accuracies(num_classes: int, prefix: str) -> MetricCollection:
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= TOP5_MIN_CLASSES:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class ImageClassifier(pl.LightningModule):
    """Trains ``model`` to map images to class scores.

    Logs ``{train,val,test}/loss`` and ``/acc`` (top-1, a fraction), and ``/acc_top5`` with six or more classes.
    The optimizer, scheduler and loss are plain mappings with the keys of their config groups.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        loss: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.criterion = build_loss(loss["name"], num_classes, loss["label_smoothing"])
        self.l1 = loss["l1"]
        self.train_metrics = _accuracies(num_classes, "train/")
        self.val_metrics = _accuracies(num_classes, "val/")
        self.test_metrics = _accuracies(num_classes, "test/")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
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
        self.train_metrics.update(logits, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, stage: str) -> None:
        images, labels = batch
        logits = self(images)
        self.log(f"{stage}/loss", self.criterion(logits, labels), on_epoch=True, prog_bar=stage == "val")
        metrics.update(logits, labels)
        self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def configure_optimizers(self) -> Any:
        # Frozen layers (model.freeze) are left out, so weight decay does not shrink them either.
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, self.hparams.optimizer)
        schedule = self.hparams.scheduler
        total = self.trainer.max_epochs if schedule["interval"] == "epoch" else self.trainer.estimated_stepping_batches
        lr_scheduler = build_schedule(optimizer, schedule, int(total))
        if lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}
