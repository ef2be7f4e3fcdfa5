"""Sweeps: the pool launcher's placement logic lives in hydra_plugins/cnnlab_launcher; this package reads what
sweeps leave behind (each trial's results.json) and summarises it."""
