"""The Hydra callback that summarises every multirun when it ends, whichever launcher ran it."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepSummaryCallback(Callback):
    # The last sweep this process summarised, for `cnnlab train` to set its exit status from
    # (`last_summary.exit_status`: 0 only when every trial completed).
    last_summary: Any = None
    # Why the last sweep could not be summarised (no trial folder at all, an unreadable folder), or None.
    last_error: str | None = None

    # The config of the multirun in progress: a sweep that stops early (Ctrl-C, a trial that killed its worker,
    # which Hydra's sweeper raises) never reaches on_multirun_end; `cnnlab train` summarises it from this.
    started: DictConfig | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummaryCallback.started = config
        SweepSummaryCallback.last_summary = None
        SweepSummaryCallback.last_error = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummaryCallback.summarize(config)

    @staticmethod
    def summarize(config: DictConfig) -> None:
        from cnnlab.errors import CnnlabError
        from cnnlab.sweeps.selection import from_config
        from cnnlab.sweeps.summary import summarize_sweep

        SweepSummaryCallback.last_summary = None
        SweepSummaryCallback.last_error = None
        # Hydra turns an exception raised here into a warning and carries on: report it ourselves, plainly.
        try:
            summary = summarize_sweep(str(config.hydra.sweep.dir), selection=from_config(config.get("selection")))
        except CnnlabError as err:
            SweepSummaryCallback.last_error = err.user_message
            log.error("No sweep summary: %s", err.user_message)
            return
        except Exception as err:  # a bug in the summary must not hide the trials' own outcome
            SweepSummaryCallback.last_error = f"{type(err).__name__}: {err}"
            log.exception("The sweep summary failed")
            return
        SweepSummaryCallback.last_summary = summary
        log.info("Sweep summary: %s (%s)", summary.sweep_dir / "summary.md", summary.outcome)
