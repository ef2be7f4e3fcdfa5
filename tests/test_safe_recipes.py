"""A shared recipe cannot run code by naming it: every ``_target_`` of the composed config (the ``hydra`` node
included) must be on the allowlist before anything is instantiated. Hostile recipes are refused with exit 2, in
one paragraph naming the recipe file, the key, the target and how to allow it, and nothing has run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli


def one_paragraph(result, verb: str = "train") -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    # Hydra's own deprecation notes (about a recipe's defaults list) may come first, as in any run
    lines = [line for line in result.stderr.splitlines() if line.startswith("cnnlab ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"cnnlab {verb}: error: ")
    return lines[0]


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


def _hostile(tmp_path: Path, victim: Path) -> dict[str, tuple[list[str], str, str, str]]:
    """name -> (command line after `train`, recipe file, key, target)."""
    recipes = tmp_path / "recipes"
    made = tmp_path / "made_by_recipe"
    cases = {}
    f = write(recipes, "callbacks/wipe.yaml", f"""\
        # Empties a file as it is "instantiated"
        defaults:
          - default
        wipe:
          _target_: builtins.open
          file: {victim}
          mode: w
        """)
    cases["open"] = (["callbacks=wipe"], str(f), "callbacks.wipe._target_", "builtins.open")
    f = write(recipes, "experiment/copy.yaml", f"""\
        # @package _global_
        # Overwrites a file through a callback
        callbacks:
          overwrite:
            _target_: shutil.copyfile
            src: {recipes / 'experiment/copy.yaml'}
            dst: {victim}
        """)
    cases["copyfile"] = (["experiment=copy"], str(f), "callbacks.overwrite._target_", "shutil.copyfile")
    f = write(recipes, "logger/mkdir.yaml", f"""\
        # A "logger" that creates folders
        evil:
          _target_: os.makedirs
          name: {made}
        """)
    cases["makedirs_logger"] = (["logger=mkdir"], str(f), "logger.evil._target_", "os.makedirs")
    f = write(recipes, "hydra/callbacks/evil.yaml", f"""\
        # Instantiated by Hydra itself, before cnnlab's task function
        evil:
          _target_: shutil.copyfile
          src: {recipes / 'hydra/callbacks/evil.yaml'}
          dst: {victim}
        """)
    cases["hydra_callbacks_group"] = (["+hydra/callbacks=evil"], str(f), "hydra.callbacks.evil._target_",
                                      "shutil.copyfile")
    f = write(recipes, "experiment/hydra_cb.yaml", f"""\
        # @package _global_
        # A Hydra callback from a recipe
        hydra:
          callbacks:
            wipe:
              _target_: builtins.open
              file: {victim}
              mode: w
        """)
    cases["hydra_callbacks_key"] = (["experiment=hydra_cb"], str(f), "hydra.callbacks.wipe._target_",
                                    "builtins.open")
    # An attribute chain through an allowed package into os: Hydra's locator would follow it
    f = write(recipes, "callbacks/chain.yaml", f"""\
        # Looks like Lightning's
        chain:
          _target_: lightning.pytorch.callbacks.model_checkpoint.os.makedirs
          name: {made}
        """)
    cases["attribute_chain"] = (["callbacks=chain"], str(f), "callbacks.chain._target_",
                                "lightning.pytorch.callbacks.model_checkpoint.os.makedirs")
    # Python's logging.config calls '()' as a factory: Hydra configures logging before the job
    f = write(recipes, "experiment/logging.yaml", f"""\
        # @package _global_
        # Logging config that calls a function
        hydra:
          job_logging:
            filters:
              evil:
                (): os.makedirs
                name: {made}
        """)
    cases["job_logging_factory"] = (["experiment=logging"], str(f), "hydra.job_logging.filters.evil.()",
                                    "os.makedirs")
    # A nested target inside the arguments of an allowed class is instantiated too (recursively)
    f = write(recipes, "callbacks/nested.yaml", f"""\
        # An allowed class with a hostile argument
        defaults:
          - default
        model_checkpoint:
          dirpath:
            _target_: os.makedirs
            name: {made}
        """)
    cases["nested"] = (["callbacks=nested"], str(f), "callbacks.model_checkpoint.dirpath._target_", "os.makedirs")
    return cases


CASES = ["open", "copyfile", "makedirs_logger", "hydra_callbacks_group", "hydra_callbacks_key", "attribute_chain",
         "job_logging_factory", "nested"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_recipe_is_refused_before_anything_runs(tmp_path: Path, victim: Path, case: str) -> None:
    args, recipe, key, target = _hostile(tmp_path, victim)[case]
    cwd = tmp_path / "work"
    cwd.mkdir()
    message = one_paragraph(run_cli("train", "--config-dir", str(tmp_path / "recipes"), *args, cwd=cwd))
    assert f"{key}: {target} (set in {recipe})" in message
    assert "nothing has run" in message
    assert f"--allow-target={target}" in message and f"CNNLAB_ALLOWED_TARGETS={target}" in message
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "made_by_recipe").exists()
    assert not (cwd / "outputs").exists()


def test_hostile_recipe_in_a_sweep_is_refused(tmp_path: Path, victim: Path) -> None:
    args, recipe, key, target = _hostile(tmp_path, victim)["copyfile"]
    cwd = tmp_path / "work"
    cwd.mkdir()
    message = one_paragraph(run_cli("train", "-m", "--config-dir", str(tmp_path / "recipes"),
                                    "experiment=lenet5_mnist,copy", cwd=cwd))
    assert f"{key}: {target} (set in {recipe})" in message
    assert victim.read_text() == "precious\n" and not (cwd / "outputs").exists()


def test_target_given_on_the_command_line_is_named(tmp_path: Path) -> None:
    message = one_paragraph(run_cli("train", "+callbacks.x._target_=os.makedirs", "+callbacks.x.name=made",
                                    cwd=tmp_path))
    assert "callbacks.x._target_: os.makedirs (set in the command line: +callbacks.x._target_=os.makedirs)" in message
    assert not (tmp_path / "made").exists()


def test_unsafe_environment_for_the_job_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "recipes", "experiment/preload.yaml", """\
        # @package _global_
        # Python code from the recipe folder in every process the run starts
        hydra:
          job:
            env_set:
              PYTHONPATH: /tmp/evil
        """)
    message = one_paragraph(run_cli("train", "--config-dir", str(tmp_path / "recipes"), "experiment=preload",
                                    cwd=tmp_path))
    assert "hydra.job.env_set.PYTHONPATH" in message and "experiment/preload.yaml" in message


def test_the_user_allows_a_target_from_the_command_line_or_the_environment(tmp_path: Path, victim: Path) -> None:
    args, *_ = _hostile(tmp_path, victim)["open"]
    recipes = str(tmp_path / "recipes")
    printed = run_cli("train", "--allow-target=builtins.open", "--config-dir", recipes, *args, "--cfg", "job",
                      cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "_target_: builtins.open" in printed.stdout
    printed = run_cli("train", "--config-dir", recipes, *args, "--cfg", "job", cwd=tmp_path,
                      env={"CNNLAB_ALLOWED_TARGETS": "shutil.copyfile,builtins.open"})
    assert printed.returncode == 0, printed.stderr
    # a recipe cannot allow itself: the allowlist is not a config key
    assert victim.read_text() == "precious\n"


def test_resume_refuses_a_saved_config_with_a_hostile_target(tmp_path: Path, victim: Path) -> None:
    run_dir = tmp_path / "run"
    hydra = subprocess.run(
        [sys.executable, "-c", "import sys; from cnnlab.config.compose import _Composer, register; register();\n"
         "from omegaconf import OmegaConf\n"
         "with _Composer(None, 'config') as c: cfg = c.compose([])\n"
         "OmegaConf.save(OmegaConf.create({'hydra': OmegaConf.to_container(cfg.hydra)}), sys.argv[1])",
         str(tmp_path / "hydra.yaml")], capture_output=True, text=True)
    assert hydra.returncode == 0, hydra.stderr
    config = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--cfg", "job"], capture_output=True,
                            text=True, cwd=tmp_path).stdout
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        config.replace("callbacks:\n", f"callbacks:\n  wipe:\n    _target_: builtins.open\n    file: {victim}\n"
                                       f"    mode: w\n", 1))
    (run_dir / ".hydra" / "hydra.yaml").write_text((tmp_path / "hydra.yaml").read_text())
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run_dir / "results.json").write_text(json.dumps({"status": "interrupted"}))
    message = one_paragraph(run_cli("resume", str(run_dir), cwd=tmp_path), verb="resume")
    assert f"callbacks.wipe._target_: builtins.open (set in {run_dir / '.hydra' / 'config.yaml'})" in message
    assert victim.read_text() == "precious\n"


def test_every_built_in_option_passes_without_importing_torch() -> None:
    """Every option of the groups that carry targets, and every recipe, composes and passes the allowlist."""
    code = textwrap.dedent("""\
        import sys
        from cnnlab.config.compose import _Composer, register, builtin_config_dir
        from cnnlab.config.targets import check_targets, find_targets
        register()
        conf = builtin_config_dir()
        jobs = [[]]
        for group in ("callbacks", "logger", "launcher", "sweep", "experiment", "optimizer", "scheduler"):
            jobs += [[f"{group}={p.stem}"] for p in sorted((conf / group).glob("*.yaml"))]
        jobs.append(["callbacks=[default,early_stopping,rich]"])
        jobs.append(["logger=[csv,tensorboard,wandb]"])
        seen = set()
        with _Composer(None, "config") as composer:
            for job in jobs:
                cfg = composer.compose(job)
                check_targets(cfg)
                seen |= {t for _, t, kind in find_targets(cfg) if kind == "target"}
        heavy = [m for m in ("torch", "lightning", "torchvision") if m in sys.modules]
        print(len(jobs), sorted(seen), heavy)
        assert not heavy, heavy
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "CNNLAB_ALLOWED_TARGETS"})
    assert result.returncode == 0, result.stderr[-3000:]
    for target in ("lightning.pytorch.callbacks.ModelCheckpoint", "lightning.pytorch.loggers.WandbLogger",
                   "hydra_plugins.cnnlab_sweeps.pool_launcher.PoolLauncher",
                   "cnnlab.sweeps.callback.SweepSummaryCallback"):
        assert target in result.stdout


@pytest.mark.parametrize("target", [
    "lightning.pytorch.callbacks.ModelCheckpoint", "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.loggers.CSVLogger", "torch.optim.SGD", "torch.optim.lr_scheduler.CosineAnnealingLR",
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher", "cnnlab.training.callbacks.ProgressBar",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"])
def test_allowed_by_default(target: str) -> None:
    from cnnlab.config.targets import is_allowed

    assert is_allowed(target)


@pytest.mark.parametrize("target", [
    "builtins.open", "shutil.copyfile", "os.makedirs", "os.system", "subprocess.Popen", "builtins.exec",
    "lightning.pytorch.callbacks.os.makedirs", "torch.optim.lr_scheduler.warnings.warn",
    "cnnlab.record.plot_curves",  # a function of cnnlab's, writing a file where it is told: not a class
    "cnnlab.config.targets.Path", "torch.optim.optimizer.Any", "cnnlab", "torch.optim..SGD", "torch.optim.SGD()"])
def test_refused_by_default(target: str) -> None:
    from cnnlab.config.targets import is_allowed

    assert not is_allowed(target)


def test_hostile_recipe_from_cnnlab_recipes_is_refused(tmp_path: Path, victim: Path) -> None:
    args, recipe, key, target = _hostile(tmp_path, victim)["hydra_callbacks_key"]
    message = one_paragraph(run_cli("train", *args, cwd=tmp_path,
                                    env={"CNNLAB_RECIPES": str(tmp_path / "recipes")}))
    assert f"{key}: {target} (set in {recipe})" in message
    assert victim.read_text() == "precious\n"


def test_another_primary_config_is_checked_too(tmp_path: Path, victim: Path) -> None:
    """--config-path replaces cnnlab's tree as Hydra's primary config: its targets are checked all the same."""
    primary = write(tmp_path / "other", "config.yaml", f"""\
        seed: 1
        hydra:
          callbacks:
            wipe:
              _target_: builtins.open
              file: {victim}
              mode: w
        """)
    message = one_paragraph(run_cli("train", "--config-path", str(primary.parent), "--config-name", "config",
                                    cwd=tmp_path))
    assert f"hydra.callbacks.wipe._target_: builtins.open (set in {primary})" in message
    assert victim.read_text() == "precious\n" and not (tmp_path / "outputs").exists()


def test_interpolated_and_logging_targets_are_judged_by_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from cnnlab.config.targets import TargetNotAllowed, check_targets

    monkeypatch.setenv("EVIL_TARGET", "shutil.copyfile")
    interpolated = OmegaConf.create({"callbacks": {"x": {"_target_": "${oc.env:EVIL_TARGET}"}}})
    with pytest.raises(TargetNotAllowed, match=r"callbacks.x._target_: shutil.copyfile"):
        check_targets(interpolated)
    handler = OmegaConf.create({"hydra": {"job_logging": {"handlers": {"h": {"class": "shutil.copyfile"}}}}})
    with pytest.raises(TargetNotAllowed, match=r"hydra.job_logging.handlers.h.class: shutil.copyfile"):
        check_targets(handler)
    check_targets(OmegaConf.create({"hydra": {"job_logging": {"handlers": {"h": {"class": "logging.FileHandler"}}}}}))
    in_a_list = OmegaConf.create({"callbacks": {"x": {"_target_": "cnnlab.training.callbacks.ProgressBar",
                                                      "args": [{"_target_": "os.remove", "path": "x"}]}}})
    with pytest.raises(TargetNotAllowed, match=r"callbacks.x.args\[0\]._target_: os.remove"):
        check_targets(in_a_list)
    monkeypatch.setenv("CNNLAB_ALLOWED_TARGETS", "shutil.copyfile")
    check_targets(interpolated)
