"""Sweeps. The pool launcher and the Optuna sweeper live in ``hydra_plugins/cnnlab_sweeps`` (where Hydra finds
plugins); this package reads what sweeps leave behind (each trial's results.json) and summarises it."""
