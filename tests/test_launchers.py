"""The ``pool`` and ``ray`` launchers are Hydra launchers like Hydra's own: Hydra's launcher test suites, run the way
hydra-joblib-launcher and hydra-ray-launcher run them, and the bugs a subprocess-per-trial design had."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite  # fixtures: hydra.extra.pytest_plugin


from conftest import QUICK, run_cli

POOL = ["hydra.launcher.slots=2", "hydra.launcher.gpus=[]"]
RAY = ["hydra.launcher.num_cpus=2"]


@pytest.fixture(scope="module", autouse=True)
def ray_stops() -> object:
    """A local Ray started by the in-process suites stops with this module."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def test_discovery() -> None:
    """Hydra finds both launchers in hydra_plugins/, and their configs as hydra/launcher=pool, =cnnlab_ray."""
    from hydra.core.config_store import ConfigStore

    names = [x.__name__ for x in Plugins.instance().discover(Launcher)]
    assert "PoolLauncher" in names and "RayLauncher" in names
    launchers = ConfigStore.instance().repo["hydra"]["launcher"]
    assert "pool.yaml" in launchers and "cnnlab_ray.yaml" in launchers


@pytest.mark.parametrize("launcher_name, overrides", [("pool", POOL)])
class TestPoolLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "pool"}, {"override hydra/hydra_logging": "hydra_debug"},
                    {"override hydra/job_logging": "disabled"}]}, ["-m", *POOL])],
)
class TestPoolLauncherIntegration(IntegrationTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("launcher_name, overrides", [("cnnlab_ray", RAY)])
class TestRayLauncher(LauncherTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "cnnlab_ray"}, {"override hydra/hydra_logging": "hydra_debug"},
                    {"override hydra/job_logging": "disabled"}]}, ["-m", *RAY])],
)
class TestRayLauncherIntegration(IntegrationTestSuite):
    pass
