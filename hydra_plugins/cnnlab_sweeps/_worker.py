"""Long-lived worker processes for ``hydra/launcher=pool``, and the command line that runs one trial.

A worker is ``python -m hydra_plugins.cnnlab_sweeps._worker --serve <fd>``, started once per slot with the slot's
environment (``CUDA_VISIBLE_DEVICES``, thread counts). It receives pickled jobs (see ``trials.Job``) over a socket,
runs them one after another in its main thread with ``trials.execute`` and sends each ``JobReturn`` back, so the
imports of an application (torch, Lightning: seconds) are paid once per slot, not once per trial, as with
joblib's reusable loky workers. It ends when the launcher closes the socket, on Ctrl-C, and when the launching
process has gone (it then sends itself SIGTERM, so that a run can stop cleanly).

``python -m hydra_plugins.cnnlab_sweeps._worker <job file> [hydra.*=...]`` runs the one trial stored in the job
file, in this process: the command line a worker has while it runs that trial, which Lightning's DDP launcher runs
again, with ``hydra.run.dir=...`` appended, for each further process of the trial.

The module's name starts with ``_`` so that Hydra's plugin scan does not import it.
"""

import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.utils import JobReturn, JobStatus

from hydra_plugins.cnnlab_sweeps import trials

log = logging.getLogger(__name__)

MODULE = "hydra_plugins.cnnlab_sweeps._worker"
# After Ctrl-C, how long a busy worker may take to stop by itself (a run saving its checkpoint) before it is
# asked again, and then killed.
STOP_GRACE_S = 5.0
KILL_AFTER_S = 60.0


def _dumps(obj: Any) -> bytes:
    import cloudpickle  # functions defined in __main__ or a test travel by value, as with joblib and submitit

    return cloudpickle.dumps(obj)


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class TrialStopped(BaseException):
    """The trial's process was asked to stop (its task raised ``SystemExit`` or ``KeyboardInterrupt``, as on
    Ctrl-C): the sweep stops too, as it would with Hydra's basic launcher, which runs jobs in its own process."""

    def __init__(self, ret: JobReturn, exit_code: Any) -> None:
        super().__init__(f"trial stopped ({'KeyboardInterrupt' if exit_code is None else f'exit {exit_code}'})")
        self.ret, self.exit_code = ret, exit_code  # exit_code None: KeyboardInterrupt


# --- the launcher's side -------------------------------------------------------------------------------------


class Worker:
    """One slot's worker process, seen from the launcher; started on first use, restarted after a crash."""

    def __init__(self, env: Dict[str, str]) -> None:
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.conn: Optional[Connection] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.conn is not None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", MODULE, "--serve", str(theirs.fileno())],
                                         env=self.env, pass_fds=[theirs.fileno()])
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())

    def run(self, job: trials.Job) -> JobReturn:
        """Run ``job`` on this worker (starting it if need be) and return its ``JobReturn``; a worker that dies
        meanwhile gives a failed ``JobReturn`` that names the trial's folder, and is started afresh next time."""
        payload = _dumps(job)
        if not self.alive():
            self.start()
        assert self.conn is not None and self.proc is not None
        try:
            self.conn.send_bytes(payload)
            reply = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as err:
            pid = self.proc.pid
            try:
                code: Optional[int] = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            return trials.failed_return(job, trials.TrialProcessDied(
                f"trial #{job.num} in {job.run_dir}: its worker process (pid {pid}) {_describe_exit(code)} before "
                f"the trial returned (a crash, os._exit, or out of memory?){'' if code is not None else f': {err}'}; "
                f"the slot's next trial gets a fresh worker"))
        if reply.get("retire"):  # the trial left state behind that the next one must not inherit
            self.stop()
        if reply.get("stopped"):
            raise TrialStopped(reply["ret"], reply.get("exit_code"))
        return reply["ret"]

    def stop(self, timeout: float = 10.0) -> None:
        """Let an idle worker end (it ends when the socket closes); kill it if it does not."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def interrupt(self) -> None:
        """After Ctrl-C: give a busy trial time to stop by itself (it got the terminal's SIGINT too), then ask it
        (SIGINT), then kill it. No worker outlives the sweep."""
        proc = self.proc  # the slot's thread, waiting for this worker's reply, sees it end and cleans up
        if proc is None:
            return
        for sig, wait in ((None, STOP_GRACE_S), (signal.SIGINT, KILL_AFTER_S), (signal.SIGKILL, None)):
            if proc.poll() is not None:
                break
            if sig is not None:
                proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue


def stop_all(workers: List[Worker]) -> None:
    for worker in workers:  # all at once: each ends as soon as its socket closes
        if worker.conn is not None:
            worker.conn.close()
            worker.conn = None
    for worker in workers:
        worker.stop()


# --- the worker's side ---------------------------------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    """End this worker when the process that started it is gone (killed outright): SIGTERM first, so that the
    trial can stop cleanly, then at once."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(KILL_AFTER_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _distributed_left_behind() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized())
    except Exception:
        return True


def _reply(ret: JobReturn, retire: bool, **more: Any) -> bytes:
    try:
        return _dumps({"ret": ret, "retire": retire, **more})
    except Exception as err:  # a return value that cannot travel: the trial ran, its value is lost
        value = ret._return_value
        ret._return_value = RuntimeError(f"the trial's return value could not be sent back ({err}): {value!r}"[:2000])
        ret.status = JobStatus.FAILED
        return _dumps({"ret": ret, "retire": retire, **more})


def _exit_now() -> None:
    """End an idle worker without the interpreter's teardown of everything its trials imported (seconds with
    torch loaded): its exit handlers run, its output is flushed, then the process ends."""
    import atexit

    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


_scratch: Optional[Path] = None  # this worker's folder for job files


def serve(fd: int) -> int:
    conn = Connection(fd)
    _watch_parent(os.getppid())
    global _scratch
    scratch = _scratch = Path(tempfile.mkdtemp(prefix="hydra-pool-worker-"))
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError, KeyboardInterrupt):
                _exit_now()
            job: trials.Job = pickle.loads(data)
            job_file = scratch / f"job-{job.num}.pkl"
            job_file.write_bytes(data)
            stop: Dict[str, Any] = {}
            try:
                ret = trials.execute(job, job_file=str(job_file))
            except BaseException as err:  # SystemExit, KeyboardInterrupt: the trial stopped, and so does the worker
                ret = trials.failed_return(job, RuntimeError(f"trial #{job.num} in {job.run_dir} stopped: {err!r}"))
                stop = {"stopped": True, "exit_code": err.code if isinstance(err, SystemExit) else None}
            finally:
                job_file.unlink(missing_ok=True)
            retire = bool(stop) or _distributed_left_behind()
            try:
                conn.send_bytes(_reply(ret, retire, **stop))
            except (OSError, KeyboardInterrupt):
                return 1
            if retire:
                _exit_now()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_one(job_file: str, overrides: List[str]) -> int:
    """Run the trial stored in ``job_file`` once more in this process (another process of a DDP trial)."""
    job: trials.Job = pickle.loads(Path(job_file).read_bytes())
    ret = trials.execute(job, extra_overrides=overrides, job_file=job_file, record=False)
    if ret.status != JobStatus.COMPLETED:
        print(f"trial #{job.num} in {job.run_dir} failed: {ret._return_value!r}", file=sys.stderr)
        return 1
    return 0


def main(argv: List[str]) -> int:
    if argv[:1] == ["--serve"] and len(argv) == 2:
        return serve(int(argv[1]))
    if not argv or argv[0].startswith("-"):
        print(f"usage: python -m {MODULE} <job file> [hydra.key=value ...]", file=sys.stderr)
        return 2
    return run_one(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
