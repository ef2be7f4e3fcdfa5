"""Datasets, transforms and the DataModule. Knows nothing of models."""

from cnnlab.data.datamodule import ImageDataModule, build_datamodule

__all__ = ["ImageDataModule", "build_datamodule"]
