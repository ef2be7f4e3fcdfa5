"""W&B a team can live in, tested without a network: the offline fallback when W&B cannot be reached with a key
set, what an (offline) run holds (config + provenance, the recipe tag, config and model artifacts, test and
validation metrics in the summary, failed runs marked failed with the error), and the ``wandb agent`` command
template of examples/wandb-sweep expanding to a valid ``cnnlab train`` command line."""

from __future__ import annotations

import socket
import struct
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from conftest import REPO, results_of, run_cli, run_dir_of

SWEEP = REPO / "examples" / "wandb-sweep" / "sweep.yaml"


def _chunks(path: Path) -> Iterator[bytes]:
    """The records of a ``.wandb`` file: a 7-byte header, then LevelDB-style 32 KiB blocks of (crc, length,
    type)-framed chunks."""
    data = path.read_bytes()
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        chunk = data[position:position + length]
        position += length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def wandb_records(run_dir: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    files = list((run_dir / "wandb").glob("offline-run-*/*.wandb"))
    assert len(files) == 1, files
    found: dict[str, Any] = {"config": {}, "tags": set(), "summary": {}, "artifacts": {}, "exit": None}
    for raw in _chunks(files[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["tags"] |= set(record.run.tags)
        elif kind == "config":
            found["config"].update({item.key: item.value_json for item in record.config.update})
        elif kind == "summary":
            found["summary"].update({item.key or "/".join(item.nested_key): item.value_json
                                     for item in record.summary.update})
        elif kind == "artifact":
            found["artifacts"][record.artifact.type] = sorted(m.path for m in record.artifact.manifest.contents)
        elif kind == "exit":
            found["exit"] = record.exit.exit_code
    return found


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def recipe_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "team"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "tiny_mlp.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        # A tiny MLP on digits
        defaults:
          - override /model: mlp
        model:
          width: 32
        """))
    return folder


def test_unreachable_wandb_with_a_key_falls_back_offline_and_logs_everything(tmp_path: Path,
                                                                              recipe_folder: Path) -> None:
    env = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
    started = time.perf_counter()
    result = run_cli("train", "--config-dir", str(recipe_folder), "experiment=tiny_mlp", "logger=[csv,wandb]",
                     "trainer.max_epochs=2", "trainer.enable_model_summary=false", cwd=tmp_path, env=env,
                     timeout=300)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert "W&B logs offline" in said and "cannot be reached" in said
    assert elapsed < 180, elapsed  # bounded: a connect timeout, not W&B's retries
    run_dir = run_dir_of(result)
    results = results_of(run_dir)
    assert results["status"] == "completed" and results["wandb_sync"].startswith("wandb sync ")

    logged = wandb_records(run_dir)
    assert "recipe:tiny_mlp" in logged["tags"]
    provenance = yaml.safe_load(logged["config"]["provenance"])
    assert provenance["recipe"]["name"] == "tiny_mlp" and provenance["recipe"]["sha256"]
    assert provenance["versions"]["torch"] and provenance["command"].startswith("cnnlab train")
    assert yaml.safe_load(logged["config"]["model"])["width"] == 32  # the resolved config
    assert logged["artifacts"]["config"] == [".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml",
                                             "recipe/tiny_mlp.yaml"]
    assert logged["artifacts"]["model"] == ["best.ckpt", "last.ckpt"]
    for key in ("test/acc", "test/loss", "val/acc_best", "val/acc", "val/loss"):
        assert key in logged["summary"], key
    assert logged["summary"]["status"] == '"completed"'
    assert logged["exit"] == 0


def test_a_failed_run_ends_wandb_as_failed_with_its_error(tmp_path: Path) -> None:
    result = run_cli("train", "logger=[csv,wandb]", "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=2",
                     "trainer.enable_model_summary=false", cwd=tmp_path, env={"WANDB_MODE": "offline"}, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = run_dir_of(result)
    status = results_of(run_dir)["status"]
    assert status in ("diverged", "failed")
    logged = wandb_records(run_dir)
    assert logged["exit"] == 1  # W&B's failed state
    assert logged["summary"]["status"] == f'"{status}"' and len(logged["summary"]["error"]) > 10


def _agent_command(sweep: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command ``wandb agent`` runs for a trial with ``values``: W&B's own expansion of the template."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    template = sweep_utils.create_sweep_command(list(sweep["command"]))
    expanded = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    command: list[str] = []
    for chunk in map(str, template):  # as wandb_agent.Agent._command_run does
        if chunk.startswith("${") and chunk.endswith("}"):
            command += expanded.get(chunk[2:-1]) or []
        else:
            command.append(chunk)
    return command


def _trials(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Each listed value of each parameter once, and each end of each range."""
    choices = {}
    for name, spec in sweep["parameters"].items():
        choices[name] = spec["values"] if "values" in spec else [spec["min"], spec["max"]]
    first = {name: values[0] for name, values in choices.items()}
    trials = [first]
    for name, values in choices.items():
        trials += [{**first, name: value} for value in values[1:]]
    return trials


def test_wandb_agent_template_expands_to_a_valid_cnnlab_command(tmp_path: Path) -> None:
    sweep = yaml.safe_load(SWEEP.read_text())
    assert set(sweep["parameters"]) == {"optimizer.lr", "data.batch_size", "model.depth"}
    assert "${args_no_hyphens}" in sweep["command"]
    trials = _trials(sweep)
    commands = [_agent_command(sweep, trial) for trial in trials]
    assert commands[0][:2] == ["cnnlab", "train"]
    assert "optimizer.lr=0.0001" in commands[0] and "model.depth=1" in commands[0]
    # one fresh interpreter checks every trial's command line, exactly as `cnnlab train` would before it trains
    code = ("import sys, json\nfrom cnnlab.config import check_command_line\n"
            "for args in json.loads(sys.argv[1]): check_command_line(args[2:])\nprint('ok')")
    import json
    import subprocess
    import sys

    checked = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], capture_output=True, text=True,
                             cwd=tmp_path)
    assert checked.returncode == 0 and checked.stdout.strip() == "ok", checked.stderr[-3000:]
    # and one of them, printed as the run would compose it
    printed = run_cli(*commands[-1][1:], "--cfg", "job", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    cfg = yaml.safe_load(printed.stdout)
    values = trials[-1]
    assert cfg["model"]["name"] == "mlp" and cfg["model"]["depth"] == values["model.depth"]
    assert cfg["optimizer"]["lr"] == values["optimizer.lr"] and cfg["data"]["batch_size"] == values["data.batch_size"]
    assert set(cfg["logger"]) == {"csv", "wandb"}
