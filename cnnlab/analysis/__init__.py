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
    "filters": "cnnlab.analysis.filters",
    "feature_maps": "cnnlab.analysis.feature_maps",
    "cam": "cnnlab.analysis.cam",
    "adversarial": "cnnlab.analysis.adversarial",
    "fooling": "cnnlab.analysis.fooling",
}


def run_checkpoint(run_dir, results: dict | None) -> "str | None":
    """The checkpoint of a run that analyses read, from the run folder itself (a moved or copied folder reads its
    own): ``results.json``'s ``best_checkpoint`` when that file is in ``checkpoints/``, else
    ``checkpoints/last.ckpt``; None when the folder has neither. Imports nothing heavy."""
    from pathlib import Path

    folder = Path(run_dir) / "checkpoints"
    best = (results or {}).get("best_checkpoint")
    for candidate in ([folder / Path(best).name] if best else []) + [folder / "last.ckpt"]:
        if candidate.is_file():
            return str(candidate)
    return None
