"""README as a test: every `cnnlab …` command in README's code blocks and in `cnnlab --help`'s examples is either
run here — offline, on the CPU, shortened — and checked, or listed below with the reason it cannot run here.
A command added to README without an entry in PLANS fails the suite."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from cnnlab.cli import USAGE
from conftest import REPO, SHARED_DATA, results_of, run_cli, run_dir_of

SHORT = ("trainer.max_epochs=1", "trainer.enable_model_summary=false")
MNIST = (f"data.root={SHARED_DATA}", "data.download=false", "trainer.limit_train_batches=30",
         "trainer.limit_val_batches=5", "trainer.limit_test_batches=5")
PLACEHOLDER_RUN = "outputs/2026-11-23/10-41-05_4321"  # README's example run folder: a real one replaces it


@dataclass(frozen=True)
class Run:
    """Run the command with ``extra`` overrides appended; expect exit ``status`` and ``says`` on the console."""

    extra: tuple[str, ...] = SHORT
    status: int = 0
    says: str = ""
    slow: bool = False
    needs_mnist: bool = False


@dataclass(frozen=True)
class NotHere:
    """Cannot run on this machine; ``check`` is what is run instead (or nothing)."""

    reason: str
    check: Run | None = None
    instead: tuple[str, ...] = field(default_factory=tuple)


PLANS: dict[str, Run | NotHere] = {
    "cnnlab train": Run(extra=SHORT),
    "cnnlab train experiment=lenet5_mnist": Run(extra=(*SHORT, *MNIST), needs_mnist=True),
    "cnnlab train experiment=lenet5_mnist data.root=/data/torchvision data.download=false": Run(
        extra=(), status=1, says="Dataset 'mnist' not found"),
    "cnnlab train experiment=lenet5_mnist data.root=../shared/data": Run(extra=(*SHORT, *MNIST), needs_mnist=True),
    "cnnlab train model=mlp model.depth=3 model.activation=leaky_relu model.dropout=0.2": Run(),
    "cnnlab train model=mlp model.depth=3 optimizer=sgd optimizer.lr=0.05": Run(),
    "cnnlab train optimizer=sgd optimizer.lr=0.05 optimizer.momentum=0.9 optimizer.nesterov=true scheduler=step":
        Run(),
    "cnnlab train data=cifar10 model=resnet augmentation=[standard,colour] trainer=gpu": NotHere(
        "needs CIFAR-10 and a GPU", check=Run(extra=("data.root=nowhere", "data.download=false"), status=1,
                                              says="Dataset 'cifar10' not found")),
    "cnnlab train experiment=lenet5_mnist optimizer.lr=0.01 --cfg job": Run(extra=(), says="name: lenet5"),
    "cnnlab train --cfg job": Run(extra=(), says="name: lenet5"),
    "cnnlab train optimizer.lrr=0.1": Run(extra=(), status=2, says="Did you mean optimizer.lr=0.1?"),
    "cnnlab train --help": Run(extra=(), says="Config groups"),
    "cnnlab train -m model=mlp model.depth=1,2,4 optimizer.lr=0.01,0.1 data.batch_size=32,128": Run(
        extra=(*SHORT, "model.width=16"), slow=True),
    "cnnlab train -m optimizer.lr=0.01,0.1 model=mlp model.depth=1,2,4": Run(extra=(*SHORT, "model.width=16"),
                                                                                slow=True),
    "cnnlab train -m optimizer.lr=0.01,0.1 data.batch_size=64,128": Run(extra=SHORT, slow=True),
    "cnnlab train -m experiment=resnet20_cifar10,plain20_cifar10 model.depth=20,32,44,56": NotHere(
        "needs CIFAR-10: without it every trial fails with the dataset's message, the summary says so, exit 1",
        check=Run(extra=("data.root=nowhere", "data.download=false"), status=1, says="Dataset 'cifar10' not found",
                  slow=True)),
    "cnnlab train -m launcher=pool trainer=gpu optimizer.lr=0.01,0.1 data.batch_size=64,128": NotHere(
        "needs GPUs", check=Run(extra=("--cfg", "hydra"), says="pool")),
    "cnnlab train -m launcher=pool trainer=ddp hydra.launcher.gpus_per_trial=2 model=resnet_cifar "
    "model.depth=20,56": NotHere("needs GPUs and CIFAR-10 (tests/test_ddp.py runs DDP on the CPU)",
                                 check=Run(extra=("--cfg", "hydra"), says="gpus_per_trial: 2")),
    "cnnlab train -m launcher=pool hydra.launcher.gpus=[0,1,2,3] hydra.launcher.slots=2 ...": NotHere(
        "a pattern, not a command, and it needs 4 GPUs"),
    "cnnlab train -m launcher=pool hydra.launcher.slots=2 seed=1,2,3": Run(extra=SHORT, slow=True),
    "cnnlab train -m launcher=pool hydra.launcher.slots=2 optimizer.lr=0.01,0.1 data.batch_size=64,128": Run(
        extra=SHORT, slow=True),
    "cnnlab train -m launcher=slurm hydra.launcher.partition=gpu optimizer.lr=0.01,0.1": NotHere(
        "needs a SLURM cluster; the composed launcher config is checked instead",
        check=Run(extra=("--cfg", "hydra"), says="partition: gpu")),
    "cnnlab train -m launcher=slurm trainer=ddp trainer.devices=4 trainer.num_nodes=2 "
    "hydra.launcher.gpus_per_node=4 hydra.launcher.tasks_per_node=4 hydra.launcher.nodes=2 model=resnet_cifar "
    "model.depth=20,56": NotHere(
        "needs a SLURM cluster with GPUs", check=Run(extra=("--cfg", "hydra"), says="tasks_per_node: 4")),
    "cnnlab train -m launcher=submitit_local seed=1,2": Run(extra=SHORT, slow=True),
    "cnnlab train -m launcher=ray hydra.launcher.address=auto hydra.launcher.gpus_per_trial=1 optimizer.lr=0.01,0.1":
        NotHere("needs a running Ray cluster with GPUs (tests/test_launchers.py runs a local Ray)",
                check=Run(extra=("--cfg", "hydra"), says="address: auto")),
    'cnnlab train -m sweep=optuna launcher=pool model=mlp "model.depth=choice(1,2,4)"': Run(
        extra=(*SHORT, "hydra.sweeper.n_trials=3", "model.width=16"), slow=True),
    "cnnlab train --config-dir ~/team-recipes experiment=my_baseline": NotHere(
        "names the reader's own recipe folder; tests/test_config.py trains from a --config-dir recipe"),
    "cnnlab train --config-dir my_recipes experiment=my_recipe": NotHere(
        "names the reader's own recipe folder; tests/test_config.py trains from a --config-dir recipe"),
    "cnnlab train logger=[csv,wandb] project=my-project group=lr-study tags=[baseline]": Run(),
    "cnnlab train logger=[csv,wandb] tags=[baseline]": Run(),
    f"cnnlab resume {PLACEHOLDER_RUN}": Run(extra=(), says="nothing to resume"),
    "cnnlab resume outputs/2026-01-01/12-00-00_123": Run(extra=(), says="nothing to resume"),
    f"cnnlab eval ckpt_path={PLACEHOLDER_RUN}/checkpoints/last.ckpt": Run(extra=(), says="test/acc"),
    "cnnlab eval ckpt_path=outputs/2026-01-01/12-00-00_123/checkpoints/last.ckpt": Run(extra=(), says="test/acc"),
    "cnnlab recipes list": Run(extra=(), says="lenet5_mnist"),
    "cnnlab recipes show our_baseline": NotHere(
        "our_baseline comes from the example recipe package once installed (tests/test_recipes.py installs it in "
        "a venv); here its folder is passed instead",
        check=Run(extra=("--config-dir", str(REPO / "examples" / "team-recipes" / "team_recipes" / "conf")),
                  says="lines marked * are the recipe's")),
    "cnnlab recipes validate --config-dir ~/team-recipes": NotHere(
        "names the reader's own recipe folder; tests/test_recipes.py validates a team folder"),
    "cnnlab train --allow-target=my_team.callbacks.SlackNotifier callbacks=slack": NotHere(
        "names the reader's own class and callbacks option; tests/test_safe_recipes.py allows a target this way"),
    "cnnlab rerun outputs/2026-01-01/12-00-00_123": Run(extra=(), says="test/acc"),
    "cnnlab rerun outputs/2026-01-01/12-00-00_123 seed=1": Run(extra=(), says="test/acc"),
    "cnnlab diff outputs/2026-01-01/12-00-00_123 outputs/2026-01-02/09-30-00_456": NotHere(
        "needs two run folders; tests/test_provenance.py diffs a run and its reruns"),
    "cnnlab summary experiment=lecun1989_net4": Run(extra=(), says="2,266"),
    "cnnlab summary experiment=lecun1989_net5": Run(extra=(), says="lecun1989"),
    "cnnlab summary model=vgg model.depth=16 data=imagenet data.root=/data/imagenet": Run(
        extra=(), says="138,357,544"),
    # Studying a trained network (cnnlab analyze, conf/analysis/, tests/test_analysis.py)
    "cnnlab analyze outputs/2026-01-01/12-00-00_123 analysis=[features] analysis.features.pca=0.95": Run(
        extra=(), says="analysis/features/pca_variance"),
    f"cnnlab analyze {PLACEHOLDER_RUN} analysis=[features,confusion]": Run(
        extra=(), says="analysis/confusion/macro_f1"),
    f"cnnlab analyze {PLACEHOLDER_RUN} analysis=[features] analysis.features.layers=[features.0,classifier.1] "
    "analysis.features.pca=0.95": Run(extra=(), says="analysis/features/classifier.1/linear_svm_acc"),
    "cnnlab train experiment=lenet5_mnist analysis=[features,confusion]": Run(
        extra=(*SHORT, *MNIST, "analysis.features.max_train=5000"), needs_mnist=True, slow=True),
    # ... filters, feature maps, class activation maps (tests/test_analysis_visual.py)
    f"cnnlab analyze {PLACEHOLDER_RUN} analysis=[filters,feature_maps,cam]": Run(
        extra=(), says="analysis/cam/average_drop"),
    f"cnnlab analyze {PLACEHOLDER_RUN} analysis=[cam] analysis.cam.method=gradcampp analysis.cam.layer=features.2": Run(
        extra=(), says="analysis/cam/top1_prob_mean"),
    "cnnlab train experiment=lenet5_mnist analysis=[filters,feature_maps,cam]": Run(
        extra=(*SHORT, *MNIST), needs_mnist=True, slow=True),
    "cnnlab train model=resnet_cifar data.image_size=28 analysis=[cam] analysis.cam.method=cam": Run(
        extra=(*SHORT, "trainer.limit_train_batches=5"), says="analysis cam (", slow=True),
    # ... adversarial examples, fooling images, adversarial training (tests/test_adversarial.py)
    f"cnnlab analyze {PLACEHOLDER_RUN} analysis=[adversarial,fooling]": Run(
        extra=("analysis.adversarial.max_test=100",), says="analysis/fooling/fooled_fraction"),
    f"cnnlab analyze {PLACEHOLDER_RUN} analysis=[adversarial] analysis.adversarial.targeted=true": Run(
        extra=("analysis.adversarial.max_test=100", "analysis.adversarial.pgd_steps=3"),
        says="analysis/adversarial/pgd_target_rate@0.0627"),
    "cnnlab train training.adversarial.attack=fgsm training.adversarial.epsilon=0.1 "
    "training.adversarial.fraction=0.5": Run(),
    "cnnlab train experiment=lenet5_mnist_adversarial": Run(extra=(*SHORT, *MNIST), needs_mnist=True, slow=True),
    "cnnlab train experiment=transfer_pretrain data.root=../shared/data": Run(extra=(*SHORT, *MNIST),
                                                                              needs_mnist=True, slow=True),
    'cnnlab train -m experiment=transfer_finetune model.weights=RUN,null "model.freeze=[],conv,lower_conv" '
    "data.train_per_class=5,10,20,50 hydra.sweep.dir=outputs/transfer": NotHere(
        "needs the run folder of experiment=transfer_pretrain (RUN) and 24 trials; tests/test_finetune.py trains the "
        "presets and loads weights from a run folder, tests/test_analysis.py runs features with network=pretrained"),
    # The papers, reproduced (cnnlab report, cnnlab/report/, tests/test_report.py)
    "cnnlab report": Run(extra=("--only", "lenet5"), says="340,908 ✓"),
    "cnnlab report --run data.root=../shared/data data.download=false": NotHere(
        "trains every recipe of the papers (hours on a busy 2-core CPU); tests/test_report.py launches shortened "
        "sweeps through it. Here: CIFAR-10 is missing, so the He et al. rows have nothing to launch",
        check=Run(extra=("--only", "he2016"), says="nothing to launch")),
}


def _commands_in(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if re.match(r"cnnlab [a-z-]+(\s|$)", line) and not re.match(r"cnnlab [a-z-]+: ", line):
                commands.append(" ".join(line.split("  #")[0].split()))
    return commands


def _help_examples() -> list[str]:
    usage = USAGE.split("examples:", 1)[1]
    footer = yaml.safe_load((REPO / "conf" / "hydra" / "help" / "cnnlab.yaml").read_text())["footer"]
    lines = [line.split("  #")[0].split("(")[0].strip() for line in (usage + "\n" + footer).splitlines()]
    return [" ".join(line.split()) for line in lines if line.startswith("cnnlab ")]


def all_commands() -> list[str]:
    return sorted(set(_commands_in((REPO / "README.md").read_text())) | set(_help_examples()))


def test_every_readme_and_help_command_has_a_plan() -> None:
    missing = [command for command in all_commands() if command not in PLANS]
    assert not missing, f"README or --help shows commands with no check in tests/test_readme.py: {missing}"


def _params() -> list:
    params = []
    for command in all_commands():
        plan = PLANS.get(command)
        run = plan.check if isinstance(plan, NotHere) else plan
        if run is None:
            continue
        marks = [pytest.mark.slow] if run.slow else []
        if run.needs_mnist and not (SHARED_DATA / "MNIST" / "raw").is_dir():
            marks.append(pytest.mark.skip(reason="needs the shared MNIST copy"))
        params.append(pytest.param(command, run, id=command[:90], marks=marks))
    return params


@pytest.mark.parametrize(("command", "run"), _params())
def test_readme_command(command: str, run: Run, tmp_path: Path, trained_digits_run: Path) -> None:
    words = shlex.split(command.replace(PLACEHOLDER_RUN, str(trained_digits_run))
                        .replace("outputs/2026-01-01/12-00-00_123", str(trained_digits_run)))
    assert words[0] == "cnnlab"
    args = [w for w in words[1:] if w != "..."]
    if "--cfg" in run.extra:  # the config of the first trial: Hydra prints no config for a whole sweep
        args = [re.sub(r"^([\w./]+)=([^,\[(]+),.*$", r"\1=\2", a) for a in args if a != "-m"]
    args = [*args, *run.extra]
    result = run_cli(*args, cwd=tmp_path, env={"WANDB_MODE": "offline", "HOME": str(tmp_path)}, timeout=900)
    console = result.stdout + result.stderr
    assert result.returncode == run.status, console[-3000:]
    assert "Traceback" not in console
    assert run.says in console
    if run.status == 0 and words[1] == "train" and "-m" not in args and "--cfg" not in args and "--help" not in args:
        assert results_of(run_dir_of(result))["status"] == "completed"
