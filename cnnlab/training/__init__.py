"""The LightningModule, its losses and optimizers, and the callbacks every run gets."""

from cnnlab.training.module import ImageClassifier

__all__ = ["ImageClassifier"]
