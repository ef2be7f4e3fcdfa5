"""The Hydra callback that summarises every multirun when it ends, whichever launcher ran it."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepSummaryCallback(Callback):
    # The last sweep this process summarised, for `cnnlab train` to set its exit status from.
    last_summary: Any = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from cnnlab.sweeps.summary import summarize_sweep

        summary = summarize_sweep(str(config.hydra.sweep.dir))
        SweepSummaryCallback.last_summary = summary
        log.info("Sweep summary: %s (%d trials, %d failed or unfinished)", summary.sweep_dir / "summary.md",
                 len(summary.trials), len(summary.failed))
