"""Signals that stop a run: Ctrl-C (SIGINT), SIGTERM (``kill``, a scheduler's stop) and SIGUSR1 (SLURM's warning
before pre-emption or the time limit, ``sbatch --signal=USR1@90``).

While Lightning trains, a signal is only noted; the training loop then stops at the end of the current step with
a resumable checkpoint (see ``ResumeCheckpoint``). A second signal, or one outside training, stops the run at once.
Lightning's own reaction would not do: on Ctrl-C it calls ``sys.exit(1)``, and its SLURM handler saves its
checkpoint from inside the signal handler, in the middle of whatever step was running.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from types import FrameType
from typing import Any

from cnnlab.errors import RunInterrupted

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class SignalRequests:
    """Installs handlers for ``STOP_SIGNALS`` for the duration of a ``with`` block and remembers what arrived.

    ``deferring`` is switched on while the training loop can stop at a safe point by itself.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self.deferring = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """(Re)install the handlers: Lightning replaces the SIGTERM handler when ``fit`` starts."""
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def __enter__(self) -> "SignalRequests":
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.deferring and self.received is None:
            self.received = name
            log.warning("%s received: stopping after this training step, with a checkpoint to resume from "
                        "(send it again to stop at once).", name)
            return
        raise RunInterrupted(self.received or name)


def launched_by_slurm_launcher() -> bool:
    """Whether this process is a trial submitted by ``launcher=slurm`` (submitit marks its jobs' environment):
    requeueing such a job runs the same trial again, in the same run dir, where it resumes."""
    return bool(os.environ.get("SLURM_JOB_ID")) and os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def requeue_slurm_job() -> bool:
    """Put this SLURM job back in the queue (as Lightning's ``SLURMEnvironment(auto_requeue=True)`` does)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("Could not requeue SLURM job %s (%s): resume it with `cnnlab resume <run_dir>`.", job, err)
        return False
    if done.returncode != 0:
        log.error("scontrol requeue %s failed: %s", job, done.stderr.strip())
        return False
    log.info("Requeued SLURM job %s: it resumes from its checkpoint when it starts again.", job)
    return True
