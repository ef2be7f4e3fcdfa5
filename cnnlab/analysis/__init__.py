"""Analyses of a trained network: one module per analysis, mirroring ``conf/analysis/``.

Each analysis module has ``run(context, options) -> dict[str, float]``: it reads the network and the data from
the ``AnalysisContext`` (``cnnlab.analysis.common``), writes its JSON, PNGs and cached arrays into
``context.out_dir`` (``<run_dir>/analysis/<name>/``) and returns its headline numbers, which land in
``results.json`` as ``analysis/<name>/<metric>``. Analyses import models and data, never training internals.

This package's ``__init__`` imports nothing heavy: the config check reads ``ANALYSES``.
"""

from __future__ import annotations

# name -> module under cnnlab.analysis (each also has conf/analysis/<name>.yaml and a rule table in
# cnnlab.config.rules.ANALYSIS)
ANALYSES: dict[str, str] = {
    "features": "cnnlab.analysis.features",
    "confusion": "cnnlab.analysis.confusion",
}


def run_checkpoint(run_dir, results: dict | None) -> "str | None":
    """The checkpoint of a run that analyses read: ``results.json``'s ``best_checkpoint`` when that file is there
    (looked for in the run's own ``checkpoints/`` too, for a moved run folder), else ``checkpoints/last.ckpt``;
    None when the folder has neither. Imports nothing heavy."""
    from pathlib import Path

    run_dir = Path(run_dir)
    best = (results or {}).get("best_checkpoint")
    candidates = [Path(best), run_dir / "checkpoints" / Path(best).name] if best else []
    candidates.append(run_dir / "checkpoints" / "last.ckpt")
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return None
