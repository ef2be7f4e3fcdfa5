"""Reading checkpoint files without running code from them.

A checkpoint is a pickle, and unpickling can call any function the file names: a shared ``.ckpt`` could run
``os.system`` on the machine that loads it. Every checkpoint cnnlab reads goes through ``read_checkpoint``, which
uses ``torch.load(weights_only=True)``: only tensors and plain containers (dicts, lists, numbers, strings) are
rebuilt. cnnlab's own checkpoints hold nothing else — the run config is stored as plain containers, and the
Lightning state of this version (loops, callbacks, optimizer and scheduler states) needs no addition to torch's
safe globals — so nothing is allowlisted here; a Lightning object that ever needs to be would go through
``torch.serialization.add_safe_globals`` in this module only.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CheckpointError


def read_checkpoint(path: str | Path, purpose: str) -> dict[str, Any]:
    """The contents of the checkpoint at ``path`` (on the CPU), or ``CheckpointError`` naming the file.

    ``purpose`` says where the file was given (``model.weights``, ``cnnlab eval``…), for the message.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{purpose}: no checkpoint at {path}. Pass the path of a .ckpt file, e.g. "
                              f"<run_dir>/checkpoints/last.ckpt.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        culprit = _unsafe_global(str(err))
        if culprit:
            raise CheckpointError(
                f"{path} was refused ({purpose}): it asks to run code while loading{culprit}, which a checkpoint "
                f"written by cnnlab or Lightning never does. Nothing was executed. Only load checkpoints from "
                f"people you trust; if this one is yours, re-save its state_dict with torch.save(model.state_dict())."
            ) from None
        raise _unreadable(path, purpose, err) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise _unreadable(path, purpose, err) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} is not a readable checkpoint ({purpose}): it holds a "
                              f"{type(loaded).__name__}, not a dict of tensors or a Lightning checkpoint.")
    return loaded


def _unreadable(path: Path, purpose: str, err: BaseException) -> CheckpointError:
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch's long advice on weights_only hides the actual reason
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    reason = " ".join(text.split()).split(". ")[0].rstrip(".") or type(err).__name__
    if reason.startswith(("Unsupported operand", "invalid load key")):
        reason = "it was not written by torch.save"
    return CheckpointError(f"{path} is not a readable checkpoint ({purpose}): {reason}. Is it truncated, or another "
                           f"kind of file? Pass a .ckpt written by cnnlab train, or a file saved with torch.save.")


def _unsafe_global(message: str) -> str:
    """The function a refused pickle names (torch: "Unsupported global: GLOBAL posix.system was not an allowed
    global..."), or "" when the file failed for another reason."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return f" ({found.group(1)})" if found else ""
