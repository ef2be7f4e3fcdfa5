"""``cnnlab report``: the papers' counts computed live, runs read from their folders (grouped by recipe, checked
against it), mean ± std and verdicts, and ``--run`` launching the missing rows as real sweeps."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cnnlab import compose_config
from cnnlab.report.counts import count, count_recipe, matches_published
from cnnlab.report.papers import LECUN_1989, LENET5, Row
from cnnlab.report.runs import FoundRun, RowRuns, assign, find_runs
from cnnlab.report.verdicts import BELOW, MATCHES, NOT_RUN, WITHIN_NOISE, check_claim, outcome
from conftest import REPO, SHARED_DATA, run_cli

NET1, NET2 = "lecun1989_net1", "lecun1989_net2"
NEEDS_MNIST = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs the shared MNIST copy")
# Runs that --run launches in these tests: one epoch of 20 steps, two test batches, real MNIST.
SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=20", "trainer.limit_test_batches=2",
         "trainer.enable_model_summary=false", f"data.root={SHARED_DATA}", "data.download=false")


# --- counts, live from the zoo ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("recipe", "links", "weights", "units"), [
    ("lecun1989_net1", 2_570, 2_570, 256 + 10), ("lecun1989_net2", 3_214, 3_214, 256 + 12 + 10),
    ("lecun1989_net3", 1_226, 1_226, 256 + 64 + 16 + 10), ("lecun1989_net4", 2_266, 1_132, 256 + 128 + 16 + 10),
    ("lecun1989_net5", 5_194, 1_060, 256 + 128 + 64 + 10)])
def test_lecun_1989_counts_from_the_recipes(recipe: str, links: int, weights: int, units: int) -> None:
    counts = count_recipe([f"experiment={recipe}"])
    assert (counts.connections, counts.free_parameters, counts.parameters, counts.units) == (links, weights, weights,
                                                                                             units)


def test_zip_code_network_counts_as_its_paper() -> None:
    for recipe in ("lecun1989_zipcode", "lecun1989_zipcode_modern"):  # the modern variant: the same network
        counts = count_recipe([f"experiment={recipe}"])
        assert (counts.units, counts.connections, counts.free_parameters) == (1_256, 64_660, 9_760)


def test_lenet5_counts_as_the_1998_paper() -> None:
    counts = count_recipe(["experiment=lenet5_classic_mnist"])
    # 60,000 trainable parameters, 340,908 connections (C1 122,304, S2 5,880, C3 151,600, S4 2,000, C5 48,120,
    # F6 10,164, output 840); the 840 fixed RBF centres are parameters, not trained ones
    assert (counts.free_parameters, counts.parameters, counts.connections) == (60_000, 60_840, 340_908)


def test_connections_of_a_plain_convolution_and_a_linear_layer() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(18, 4))
    counts = count(net, (1, 5, 5))
    # conv: 3x3 output positions x (2 kernels of 9 weights + 2 biases); linear: 18x4 + 4
    assert counts.connections == 9 * 20 + 76 and counts.units == 25 + 18 + 4 and counts.parameters == 20 + 76
    assert count(net, (1, 5, 5), measures=["parameters"]).connections is None  # no forward pass needed


def test_the_report_looks_for_data_where_cnnlab_keeps_it() -> None:
    from cnnlab.data.sources import SOURCES
    from cnnlab.report.command import DATA_FOLDERS

    for name, folder in DATA_FOLDERS.items():
        assert SOURCES[name].folder(Path("root")) == Path("root") / folder


def test_counts_match_the_published_figures_as_printed() -> None:
    assert matches_published(269_722, "0.27M") and matches_published(1_727_962, "1.7M")
    assert not matches_published(269_722, "0.28M") and not matches_published(60_840, "60,000")
    assert matches_published(64_660, "64,660") and not matches_published(None, "1,256")


# --- reading runs -----------------------------------------------------------------------------------------------

def write_run(folder: Path, recipe: str, seed: int, status: str = "completed", acc: float | None = None,
              overrides: tuple[str, ...] = (), finished: str = "2026-11-25T05:00:00.000+00:00", **metrics: float) -> Path:
    """A run folder as ``cnnlab train experiment=<recipe> seed=<seed> <overrides>`` leaves it: the config Hydra
    saves in .hydra/config.yaml, and results.json with the run contract's keys."""
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    typed = [f"experiment={recipe}", f"seed={seed}", *overrides]
    OmegaConf.save(compose_config(typed), folder / ".hydra" / "config.yaml")
    (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(typed))
    results = {"status": status, "run_dir": str(folder), "overrides": typed, "finished_at": finished,
               "error": None if status == "completed" else "Training diverged at epoch 3",
               "provenance": {"recipe": {"name": recipe, "file": None, "sha256": None}}}
    if acc is not None:
        results["test/acc"] = acc
    results.update(metrics)
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "checkpoints").mkdir()
    return folder


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    sweep = root / "multirun" / "2026-11-25" / "05-00-00_1"
    for seed, acc, full in ((0, 0.80, 0.70), (1, 0.85, 0.72), (2, 0.90, 0.74)):
        write_run(sweep / str(seed), NET1, seed, acc=acc, **{"test_full/acc": full})
    # seed 0 again, earlier: the newest run of a seed counts, once
    write_run(root / "2026-11-24" / "old", NET1, 0, acc=0.10, finished="2026-11-24T05:00:00.000+00:00")
    write_run(root / "2026-11-25" / "diverged", NET1, 3, status="diverged")
    write_run(root / "2026-11-25" / "other_lr", NET1, 4, acc=0.99, overrides=("optimizer.lr=0.5",))
    write_run(root / "2026-11-25" / "elsewhere", NET1, 5, acc=0.82, overrides=("data.root=/data", "trainer.precision=16-mixed"))
    write_run(root / "2026-11-25" / "net2", "lecun1989_net2", 0, acc=0.5)
    return root


def net1_runs(runs_folder: Path, overrides: tuple[str, ...] = ()) -> RowRuns:
    row = LECUN_1989.rows[0]
    assert row.recipe == NET1
    return assign(find_runs([runs_folder]), [row], overrides)[row.key]


def test_runs_are_grouped_by_recipe_one_per_seed(runs_folder: Path) -> None:
    runs = net1_runs(runs_folder)
    # seeds 0, 1, 2 of the sweep and seed 5, whose changes do not change the experiment (where the data is, precision)
    assert sorted(r.seed for r in runs.counted) == [0, 1, 2, 5]
    assert sorted(runs.values("test/acc")) == [0.80, 0.82, 0.85, 0.90]
    assert [r.seed for r in runs.failed] == [3] and runs.failed[0].status == "diverged"
    assert runs.missing_seeds(5) == [3]
    ((other, why),) = runs.not_counted  # the run with another learning rate is not the recipe
    assert other.seed == 4 and len(why) == 1 and why[0].startswith("optimizer.lr: 0.5 (recipe: ")


def test_report_overrides_select_the_runs_made_with_them(runs_folder: Path) -> None:
    runs = net1_runs(runs_folder, ("optimizer.lr=0.5", "data.root=/elsewhere"))
    assert [r.seed for r in runs.counted] == [4]


def test_a_run_of_a_changed_recipe_is_not_counted(runs_folder: Path, tmp_path: Path) -> None:
    stale = write_run(tmp_path / "stale", NET1, 0, acc=0.9)
    saved = OmegaConf.load(stale / ".hydra" / "config.yaml")
    saved.model.variant = "net2"  # the recipe said net2 when this run was made
    OmegaConf.save(saved, stale / ".hydra" / "config.yaml")
    runs = net1_runs(tmp_path)
    assert not runs.counted and runs.not_counted[0][1][0].startswith("model.variant: 'net2'")


def test_mean_std_difference_and_verdicts(runs_folder: Path) -> None:
    row = LECUN_1989.rows[0]  # Net-1, paper 80.0 % accuracy
    result = outcome(LECUN_1989, row, net1_runs(runs_folder))
    full = result.figure  # the verdict is on the 10,000-image test set when the runs have it
    assert full is not None and full.metric.key == "test_full/acc" and full.n == 3
    assert full.mean == pytest.approx(0.72) and full.std == pytest.approx(0.02)
    assert result.difference == pytest.approx(-8.0)
    # standard error of the difference: sqrt(0.02^2 / 3 + 0.72 * 0.28 / 10000 + 0.8 * 0.2 / 160) = 3.4 points
    # (the paper's 160 test images dominate); 8 points short is more than two of them
    assert result.standard_error == pytest.approx(0.034, abs=5e-4) and result.verdict == BELOW
    small = next(f for f in result.figures if f.metric.key == "test/acc")
    assert small.n == 4 and small.mean == pytest.approx(0.8425)


def fake_runs(row: Row, accuracies: list[float]) -> RowRuns:
    return RowRuns(row, counted=[FoundRun(Path(f"/run{i}"), {"status": "completed", "test/acc": a}, row.recipe)
                                 for i, a in enumerate(accuracies)])


@pytest.mark.parametrize(("accuracies", "verdict"), [
    ([0.9905, 0.9906], MATCHES),  # 0.95 % error, rounded as printed: as good as the paper
    ([0.9890, 0.9892], WITHIN_NOISE),  # 1.09 %: short by 0.14 points, 2 standard errors are 0.29
    ([0.9850, 0.9860], BELOW),  # 1.45 %: short by 0.5 points
])
def test_verdicts_on_an_error_rate(accuracies: list[float], verdict: str) -> None:
    row = LENET5.rows[0]
    assert outcome(LENET5, row, fake_runs(row, accuracies)).verdict == verdict


def test_not_run_and_claims() -> None:
    rows = LECUN_1989.rows[:5]
    outcomes = {r.key: outcome(LECUN_1989, r, fake_runs(r, [0.80 + 0.03 * i])) for i, r in enumerate(rows)}
    assert check_claim(LECUN_1989.claims[0], outcomes).holds is True
    outcomes[rows[2].key] = outcome(LECUN_1989, rows[2], fake_runs(rows[2], [0.70]))
    broken = check_claim(LECUN_1989.claims[0], outcomes)
    assert broken.holds is False and "Net-3 70.0 % is not better than Net-2 83.0 %" in broken.detail
    outcomes[rows[4].key] = outcome(LECUN_1989, rows[4], RowRuns(rows[4]))
    assert outcomes[rows[4].key].state == NOT_RUN and check_claim(LECUN_1989.claims[0], outcomes).holds is None


# --- the command ------------------------------------------------------------------------------------------------

def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def result_row(report: str, network: str, variant: str) -> list[str]:
    """The cells of a row of a results table: network, variant, paper, cnnlab per metric, difference, verdict, notes."""
    return next(cells(line) for line in report.splitlines()
                if line.startswith(f"| {network} ") and cells(line)[1] == variant)


def test_report_of_runs_on_disk(runs_folder: Path, tmp_path: Path) -> None:
    result = run_cli("report", "--runs", str(runs_folder), "--only", "lecun1989", "--out", "rep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "rep"  # the folder, printed last
    report = (tmp_path / "rep" / "report.md").read_text()
    net1 = result_row(report, "Net-1", "faithful")
    assert net1[2:7] == ["80.0", "72.0 ± 2.0 (n=3)", "84.2 ± 4.3 (n=4)", "-8.0", "✗ below"]
    assert net1[-1] == "4 of 5 seeds, 1 failed, 1 with other settings, not counted (optimizer.lr: 0.5 (recipe: 0.002))"
    assert "Training diverged at epoch 3" in report and "`cnnlab train -m experiment=lecun1989_net3 " \
                                                       "seed=0,1,2,3,4 launcher=pool`" in report
    net4 = next(line for line in report.splitlines() if line.startswith("| Net-4 "))
    assert cells(net4) == ["Net-4", "2,266", "2,266 ✓", "1,132", "1,132 ✓"]  # links, free weights: paper, cnnlab
    with open(tmp_path / "rep" / "runs.csv") as f:
        counted = [r for r in csv.DictReader(f) if r["counted"] == "True"]
    assert len(counted) == 5  # Net-1's four seeds and Net-2's one
    assert (tmp_path / "rep" / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize(("args", "says"), [
    (["--rnus", "x"], "Unknown option --rnus"),
    (["--runs", "no_such_folder"], "--runs no_such_folder: no such folder"),
    (["--only", "lecun1999"], "names no paper or recipe"),
    (["--only", "lenet6"], "Did you mean --only lenet5?"),
    (["--seeds", "0"], "--seeds 0: give a whole number"),
    (["optimizer.lrr=0.1"], "Did you mean optimizer.lr=0.1?"),
])
def test_bad_arguments_fail_fast_with_one_paragraph(args: list[str], says: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_cli("report", *args, cwd=tmp_path)
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("cnnlab report: error:") and len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 15  # torch is not loaded for a typo (a loaded CI machine: generous)


def test_arguments_are_checked_before_torch_loads() -> None:
    probe = ("import sys; from cnnlab.report.command import parse, select; parse(['--runs', '.', '--only', 'lenet5',"
             " '--seeds', '2', 'trainer.max_epochs=1']); select(['lenet5'], 2); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_help(tmp_path: Path) -> None:
    result = run_cli("report", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--run" in result.stdout and "launcher=pool" in result.stdout


def test_rows_needing_the_same_seeds_and_overrides_share_one_sweep() -> None:
    from cnnlab.report.command import group_sweeps, sweep_arguments
    from cnnlab.report.papers import HE_2016

    nets, depths = LECUN_1989.rows[:3], HE_2016.rows[:2]  # ResNet-20, then ResNet-32 (model.depth=32)
    plan = [(nets[0], [0, 1]), (nets[1], [0, 1]), (nets[2], [1]), (depths[0], [0]), (depths[1], [0])]
    groups = group_sweeps(plan)
    assert [([r.recipe for r in rows], seeds) for rows, seeds in groups] == [
        (["lecun1989_net1", "lecun1989_net2"], [0, 1]), (["lecun1989_net3"], [1]), (["resnet20_cifar10"], [0]),
        (["resnet20_cifar10"], [0])]
    assert "model.depth=32" in sweep_arguments(*groups[3], []) and "model.depth=32" not in sweep_arguments(
        *groups[2], [])
    assert sweep_arguments(*groups[0], ["launcher=basic"])[-1] == "launcher=basic"  # the user's launcher, as given


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``cnnlab report --run`` for Net-1 and Net-2, two seeds, each run shortened to 20 steps through the passed
    overrides."""
    cwd = tmp_path_factory.mktemp("launch")
    result = run_cli("report", "--run", "--only", NET1, NET2, "--seeds", "2", "--out", "rep", *SHORT, cwd=cwd,
                     timeout=900)
    return cwd, result


@NEEDS_MNIST
def test_run_launches_the_missing_seeds_then_reports_them(launched: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, result = launched
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # Both rows need seeds 0 and 1: one sweep over both recipes, one trial per core
    assert f"experiment={NET1},{NET2} seed=0,1 launcher=pool trainer.max_epochs=1" in result.stdout
    assert f"hydra.launcher.slots={os.cpu_count()}" in result.stdout
    trials = sorted(cwd.glob(f"outputs/multirun/*/*_{NET1}+{NET2}/*/results.json"))
    assert [json.loads(p.read_text())["status"] for p in trials] == ["completed"] * 4
    report = (cwd / "rep" / "report.md").read_text()
    assert "--run launched 1 sweep (4 runs)" in report
    assert "(n=2)" in result_row(report, "Net-2", "faithful")[3]
    assert "These figures are of runs made with trainer.max_epochs=1 trainer.limit_train_batches=20" in report
    net1 = result_row(report, "Net-1", "faithful")
    assert "(n=2)" in net1[3] and "(n=2)" in net1[4]  # the 10,000-image and the 160-image test sets


@NEEDS_MNIST
def test_runs_made_with_other_settings_do_not_count_for_the_recipe(
        launched: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, _ = launched
    result = run_cli("report", "--only", NET1, "--out", "rep2", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    net1 = result_row(result.stdout, "Net-1", "faithful")
    assert net1[3] == "not run yet"
    assert net1[-1] == "2 with other settings, not counted (trainer.max_epochs: 1 (recipe: 30))"  # says why
    with open(cwd / "rep2" / "runs.csv") as f:
        why = {r["why not"] for r in csv.DictReader(f)}
    assert any("trainer.max_epochs: 1 (recipe: " in w for w in why)
    again = run_cli("report", "--run", "--only", NET1, "--seeds", "2", "--out", "rep3", *SHORT, cwd=cwd)
    assert again.returncode == 0 and "nothing to launch" in again.stdout  # both seeds are there: none run again


@NEEDS_MNIST
def test_a_recipe_whose_runs_fail_is_reported_as_failed(tmp_path: Path) -> None:
    result = run_cli("report", "--run", "--only", NET1, "--seeds", "1", "--out", "rep", *SHORT,
                     "model.weights=no_such.ckpt", "launcher=basic", cwd=tmp_path)  # any launcher: here Hydra's own
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr  # the report is still written
    report = (tmp_path / "rep" / "report.md").read_text()
    assert result_row(report, "Net-1", "faithful")[3:5] == ["failed", "failed"]
    assert "failed run outputs/multirun/" in report and "model.weights=no_such.ckpt is neither a file" in report
    assert "1 exited with an error" in report


def test_cifar_rows_without_data_get_the_depth_sweep_that_produces_them(tmp_path: Path) -> None:
    from cnnlab.report.command import _data_unavailable, sweep_commands
    from cnnlab.report.papers import HE_2016

    overrides = [f"data.root={tmp_path}"]
    assert _data_unavailable(HE_2016.rows[0], overrides) == f"cifar10 is not in {tmp_path}/cifar-10-batches-py"
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    assert _data_unavailable(HE_2016.rows[0], overrides) is None
    commands = sweep_commands(HE_2016.rows, overrides)
    assert commands[HE_2016.rows[1].key] == ("cnnlab train -m experiment=resnet20_cifar10 model.depth=20,32,44,56,110 "
                                             f"seed=0 launcher=pool data.root={tmp_path}")
    assert "experiment=plain20_cifar10 model.depth=20,32,44,56 " in commands[HE_2016.rows[-1].key]
