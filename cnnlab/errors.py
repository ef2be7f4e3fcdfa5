"""Errors a user can fix. The CLI prints their message as one paragraph, without a traceback."""

from __future__ import annotations


class CnnlabError(Exception):
    """Base class: the message says what went wrong and what to do about it."""

    @property
    def user_message(self) -> str:
        text = str(self)
        # A DataLoader worker re-raises our error with its own traceback text prepended; keep our sentence only.
        marker = f"{type(self).__name__}: "
        if "Original Traceback" in text and marker in text:
            text = text.rsplit(marker, 1)[1]
        return " ".join(text.split())


class ConfigError(CnnlabError):
    """The composed configuration is invalid (unknown option or key, wrong type, impossible value)."""


class DatasetNotFoundError(CnnlabError):
    """The dataset's files are not where the config says and could not be downloaded."""


class CorruptImageError(CnnlabError):
    """An image file in a folder dataset cannot be decoded."""


class TrainingDivergedError(CnnlabError):
    """The training loss became NaN or infinite."""


class CheckpointError(CnnlabError):
    """A file given as a checkpoint cannot be read safely (not a checkpoint, truncated, or it holds code)."""


class RunInterrupted(BaseException):
    """A signal (Ctrl-C, SIGTERM, SLURM's pre-emption warning) stopped the run after a resumable checkpoint.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the way swallows it.
    """

    EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143, "SIGUSR1": 138}

    def __init__(self, signal_name: str, checkpoint: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.checkpoint = checkpoint

    @property
    def exit_status(self) -> int:
        return self.EXIT_STATUS.get(self.signal_name, 130)

    @property
    def user_message(self) -> str:
        saved = f" after saving {self.checkpoint}" if self.checkpoint else ""
        return f"Interrupted by {self.signal_name}{saved}."
