"""Where a run came from: the recipe (name, file, SHA-256, the recipe folder's git commit), the command line, the
code (cnnlab's version and commit, its dependencies' versions), the machine and the data.

``collect`` gathers it once when a run starts; ``results.json`` keeps it under ``provenance``, every checkpoint
under ``PROVENANCE_KEY`` and the W&B run in its config. Reading it imports nothing heavy: versions come from the
installed packages' metadata, and GPU names only from a torch that is already loaded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import cnnlab

PROVENANCE_KEY = "cnnlab_provenance"  # where checkpoints keep it
PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "omegaconf", "wandb")
RECIPE_GROUP = "experiment"
RERUN_ENV = "CNNLAB_RERUN_OF"  # set by ``cnnlab rerun`` to the old run's folder


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(folder: Path, path: Path | None = None) -> dict[str, Any]:
    """The commit of the git work tree holding ``folder`` and whether it (or just ``path`` in it) differs from
    that commit; ``{"commit": None, "dirty": None}`` outside a git work tree."""
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    scope = ["--", str(path)] if path is not None else ["--untracked-files=no"]
    status = _git(folder, "status", "--porcelain", *scope)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def git_commit() -> dict[str, str | bool | None]:
    """cnnlab's own source tree: its commit and dirty flag when it is a checkout, and its version."""
    source = Path(cnnlab.__file__).resolve().parent.parent
    return {**git_state(source), "version": cnnlab.__version__}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recipe_file(name: str, config_sources: Any) -> tuple[Path | None, str | None]:
    """The file of recipe ``name`` as Hydra found it (the first search-path entry that has it), and the entry."""
    for source in config_sources or []:
        path, scheme = str(source.get("path", "")), str(source.get("schema", ""))
        if scheme == "file":
            candidate = Path(path) / RECIPE_GROUP / f"{name}.yaml"
            if candidate.is_file():
                return candidate, f"file://{path}"
        elif scheme == "pkg":
            try:
                from importlib.resources import as_file, files

                found = files(path.replace("/", ".")).joinpath(RECIPE_GROUP).joinpath(f"{name}.yaml")
                if found.is_file():
                    with as_file(found) as real:
                        return Path(real), f"pkg://{path}"
            except Exception:
                continue
    return None, None


def recipe_provenance(hydra_node: Any) -> dict[str, Any] | None:
    """The recipe of a job (``experiment=...``) from its Hydra node (live or read back from ``.hydra/hydra.yaml``):
    name, file, SHA-256, and the git state of the folder that holds it. None when the run used no recipe."""
    try:
        name = hydra_node.runtime.choices.get(RECIPE_GROUP)
    except Exception:
        return None
    if not name:
        return None
    file, entry = _recipe_file(str(name), hydra_node.runtime.get("config_sources"))
    if file is None:
        return {"name": str(name), "file": None, "sha256": None, "search_path": None, "git": None}
    return {"name": str(name), "file": str(file), "sha256": sha256(file), "search_path": entry,
            "git": git_state(file.parent, file)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices() -> dict[str, Any]:
    """The CPU model and core count, and the names of the GPUs this process sees (when torch is loaded)."""
    found: dict[str, Any] = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "gpus": []}
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            found["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    found["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return found


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "cnnlab": cnnlab.__version__}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process, as typed (``cnnlab train ...``)."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else "cnnlab"
    if program in ("__main__.py", "cnnlab", "-m", "-c") or program.startswith("python"):
        program = "cnnlab"
    return shlex.join([program, *argv[1:]])


def dataset_fingerprint(data: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint the decoded-data cache keys its files by (names, sizes and times of the dataset's files)."""
    try:
        from cnnlab.data.sources import SOURCES
        from cnnlab.data.tensor_path import _fingerprint

        source = SOURCES.get(str(data["name"]))
        fingerprint = _fingerprint(data, source) if source is not None else None
    except Exception:  # a data set without a source of its own (folders of another kind): none
        fingerprint = None
    return {"dataset": str(data.get("name")), "root": data.get("root"), "fingerprint": fingerprint}


def collect(cfg: Any = None, hydra_node: Any = None, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything above, for the job whose Hydra node is ``hydra_node`` (the live one when None and Hydra runs)."""
    if hydra_node is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            hydra_node = HydraConfig.get()
        except Exception:
            hydra_node = None
    out: dict[str, Any] = {
        "recipe": recipe_provenance(hydra_node) if hydra_node is not None else None,
        "command": command_line(),
        "cwd": os.getcwd(),
        "cnnlab": git_commit(),
        "versions": versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "devices": devices(),
    }
    if hydra_node is not None:
        try:
            out["overrides"] = [str(o) for o in hydra_node.overrides.task]
        except Exception:
            pass
    if data is not None:
        out["data"] = dataset_fingerprint(data)
    rerun_of = os.environ.get(RERUN_ENV)
    if rerun_of:  # cnnlab rerun: the run this one repeats, and where that one came from
        out["rerun_of"] = previous_run(Path(rerun_of))
    return out


def previous_run(run_dir: Path) -> dict[str, Any]:
    import json

    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        results = {}
    return {"run_dir": str(run_dir), "status": results.get("status"),
            "metrics": {k: v for k, v in results.items() if k.startswith(("test/", "val/"))},
            "provenance": results.get("provenance")}
