"""Choosing between online and offline W&B logging without ever prompting or hanging.

Offline runs are written under the run dir and uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 3.0


def _host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _port() -> int:
    """The port of ``WANDB_BASE_URL`` (a local server's, say), or the scheme's default."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        return url.port or (80 if url.scheme == "http" else 443)
    except ValueError:
        return 443


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None  # where `wandb login` stores the key
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, _port()), timeout=CONNECT_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def offline_reason(force_offline: bool) -> str | None:
    """Why this run must log offline, or None when it can log online."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if force_offline or mode in ("offline", "dryrun"):
        return "offline mode was requested"
    if mode == "disabled":
        return None
    host = _host()
    if not _has_api_key(host):
        return "no W&B API key is set (run `wandb login` or set WANDB_API_KEY)"
    if not _reachable(host):
        return f"{host}:{_port()} cannot be reached (tried for at most {CONNECT_TIMEOUT_S:.0f} s)"
    return None


def offline_run_dirs(save_dir: str | os.PathLike) -> list[Path]:
    return sorted((Path(save_dir) / "wandb").glob("offline-run-*"))
