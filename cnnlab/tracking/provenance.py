"""Where a run's code came from: the git commit of the cnnlab source tree, when it is a checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cnnlab


def git_commit() -> dict[str, str | bool | None]:
    source = Path(cnnlab.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"commit": commit, "dirty": dirty, "version": cnnlab.__version__}
