"""``cnnlab report``: the lectures' papers' tables with cnnlab's numbers beside them.

- ``papers``: each paper's published figures, the recipe that reproduces each row, and a footnote (data only).
- ``counts``: parameters, connections and units of the zoo's networks, counted live from the built models.
- ``runs``: the finished runs of each recipe, found through their ``results.json`` and checked against the recipe.
- ``verdicts``: mean ± std over seeds, the difference to the paper, and the verdict mark.
- ``render``: the tables as Markdown (printed and written to ``report.md``) and the figure ``report.png``.
- ``command``: the command line, and ``--run``, which launches the missing recipes as sweeps.
"""
