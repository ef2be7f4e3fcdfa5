"""Bad values are refused by the config check, before torch or Lightning is imported, in one paragraph that names
the key and what is allowed; and the model families' option table is the one the builders use."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from cnnlab import compose_config
from cnnlab.config import check_command_line
from cnnlab.errors import ConfigError
from conftest import run_cli

# (command line after `cnnlab train`, the key the message must name): each reached torch or trained before.
BAD_COMMAND_LINES = [
    (["optimizer.lr=-1"], "optimizer.lr"),
    (["seed=abc"], "seed"),
    (["model=mlp", "model.depth=abc"], "model.depth"),
    (["model=mlp", "model.width=0"], "model.width"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["data.num_workers=-1"], "data.num_workers"),
    (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"], "optimizer.momentum"),
    (["model=resnet", "model.depth=17"], "model.depth"),
    (["model=resnet_cifar", "model.depth=21"], "model.depth"),
    (["model=vgg", "model.depth=12"], "model.depth"),
    (["model=vgg", "model.variant=lrn"], "model.depth=11"),
    (["model=lecun1989", "model.variant=net6", "data.image_size=16"], "model.variant"),
    (["model=lecun1989"], "data.image_size=16"),
    (["model=lenet5", "model.variant=classic2"], "model.variant"),
    (["model=lenet5", "model.variant=classic", "model.output=softmax"], "model.output"),
    (["model=mlp", "model.activation=swishy"], "model.activation"),
    (["model=mlp", "+model.widht=3"], "model.widht"),
    (["augmentation=standard", "augmentation.horizontal_flip.p=1.5"], "augmentation.horizontal_flip.p"),
    (["scheduler=multistep", "scheduler.milestones=[60,30]"], "scheduler.milestones"),
    (["-m", "optimizer.lr=0.01,-1"], "optimizer.lr"),  # every value of a sweep is checked
]


@pytest.mark.parametrize(("args", "key"), BAD_COMMAND_LINES, ids=[" ".join(args) for args, _ in BAD_COMMAND_LINES])
def test_cli_refuses_bad_values_in_one_paragraph(args: list[str], key: str, tmp_path) -> None:
    result = run_cli("train", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0], result.stderr
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run folder


# (overrides, fragments the message must hold): what is allowed, with the key.
BAD_VALUES = [
    (["optimizer.lr=0"], ["optimizer.lr", "greater than 0", "Typical values"]),
    (["optimizer.weight_decay=-0.1"], ["optimizer.weight_decay", "at least 0"]),
    (["optimizer=sgd", "optimizer.momentum=1.0"], ["optimizer.momentum", "[0, 1)"]),
    (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.dampening=0.1"], ["optimizer.dampening=0"]),
    (["optimizer.betas=[0.9,1.0]"], ["optimizer.betas", "two numbers in [0, 1)"]),
    (["optimizer.betas=[0.9]"], ["optimizer.betas"]),
    (["optimizer.eps=0"], ["optimizer.eps", "greater than 0"]),
    (["optimizer=rmsprop", "optimizer.alpha=1.5"], ["optimizer.alpha", "[0, 1)"]),
    (["seed=-1"], ["seed", "from 0 to 4294967295"]),
    (["seed=1.5"], ["seed", "whole number"]),
    (["scheduler=step", "scheduler.gamma=0"], ["scheduler.gamma", "greater than 0"]),
    (["scheduler=multistep", "scheduler.milestones=[0,10]"], ["scheduler.milestones", "increasing"]),
    (["scheduler=cosine", "scheduler.t_max=0"], ["scheduler.t_max", "at least 1, or null"]),
    (["scheduler=cosine", "scheduler.eta_min=-1"], ["scheduler.eta_min"]),
    (["scheduler=onecycle", "scheduler.pct_start=1.0"], ["scheduler.pct_start", "(0, 1)"]),
    (["scheduler=onecycle", "scheduler.max_lr=-1"], ["scheduler.max_lr"]),
    (["scheduler=onecycle", "scheduler.anneal_strategy=cosine"], ["scheduler.anneal_strategy", "'cos', 'linear'"]),
    (["scheduler=plateau", "scheduler.factor=1.0"], ["scheduler.factor", "(0, 1)"]),
    (["scheduler=plateau", "scheduler.patience=-1"], ["scheduler.patience"]),
    (["scheduler=plateau", "scheduler.mode=minimum"], ["scheduler.mode", "'min', 'max'"]),
    (["scheduler.warmup=-1"], ["scheduler.warmup"]),
    (["scheduler.warmup=2", "scheduler.warmup_start_factor=0"], ["scheduler.warmup_start_factor", "(0, 1]"]),
    (["data.eval_batch_size=0"], ["data.eval_batch_size", "at least 1, or null"]),
    (["data.num_classes=1"], ["data.num_classes", "at least 2"]),
    (["data.channels=0"], ["data.channels"]),
    (["data.image_size=0"], ["data.image_size"]),
    (["data.train_per_class=0"], ["data.train_per_class"]),
    (["data.test_per_class=0"], ["data.test_per_class"]),
    (["data.std=[0.0]"], ["data.std", "greater than 0"]),
    (["loss.l1=-0.001"], ["loss.l1", "at least 0"]),
    (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches"]),
    (["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps"]),
    (["trainer.check_val_every_n_epoch=0"], ["trainer.check_val_every_n_epoch"]),
    (["trainer.limit_train_batches=1.5"], ["trainer.limit_train_batches", "fraction in [0, 1]"]),
    (["trainer.limit_val_batches=-1"], ["trainer.limit_val_batches"]),
    (["trainer.limit_test_batches=abc"], ["trainer.limit_test_batches"]),
    (["trainer.gradient_clip_algorithm=clip"], ["trainer.gradient_clip_algorithm", "'norm', 'value'"]),
    (["trainer.precision=bf16_mixed"], ["trainer.precision", "bf16-mixed"]),
    (["trainer.accelerator=gpus"], ["trainer.accelerator", "'gpu'"]),
    (["trainer.devices=0"], ["trainer.devices"]),
    (["trainer.num_nodes=0"], ["trainer.num_nodes"]),
    (["trainer.max_steps=-2"], ["trainer.max_steps"]),
    (["model=mlp", "model.dropout=1.0"], ["model.dropout", "[0, 1)"]),
    (["model=mlp", "model.depth=-1"], ["model.depth", "at least 0"]),
    (["model=mlp", "model.depth=2.5"], ["model.depth", "whole number"]),
    (["model=mlp", "model.batch_norm=yes"], ["model.batch_norm", "true or false"]),
    (["model=alexnet", "model.dropout=-0.5"], ["model.dropout"]),
    (["model=googlenet", "model.aux_weight=-1"], ["model.aux_weight"]),
    (["model=inception_v3", "model.aux_logits=true"], ["17x17 grid", "model.aux_logits=false"]),
    (["model=resnet", "model.depth=abc"], ["ResNet has no depth 'abc'", "Valid depths: 18, 34, 50, 101, 152"]),
    (["model=plain_cifar", "model.depth=4"], ["6n+2", "model.depth"]),
    (["model=vgg", "model.variant=conv2x2"], ["Unknown VGG variant 'conv2x2'", "model.variant"]),
    (["model.channels_last=maybe"], ["model.channels_last", "true or false"]),
    (["model.freeze=features"], ["model.freeze", "a list of names"]),
    (["augmentation=random_erasing", "augmentation.random_erasing.p=-0.1"], ["augmentation.random_erasing.p"]),
    (["augmentation=random_erasing", "augmentation.random_erasing.scale=[0.5,0.1]"],
     ["augmentation.random_erasing.scale", "[min, max]"]),
    (["augmentation=geometric", "augmentation.random_perspective.p=2"], ["augmentation.random_perspective.p"]),
    (["augmentation=geometric", "augmentation.random_affine.translate=[1.5,0.1]"],
     ["augmentation.random_affine.translate"]),
    (["augmentation=colour", "augmentation.colour_jitter.hue=0.7"], ["augmentation.colour_jitter.hue", "0.5"]),
    (["augmentation=colour", "augmentation.colour_jitter.brightness=-1"], ["augmentation.colour_jitter.brightness"]),
    (["augmentation=standard", "augmentation.random_crop.padding=-4"], ["augmentation.random_crop.padding"]),
    (["augmentation=randaugment", "augmentation.randaugment.magnitude=31"],
     ["augmentation.randaugment.magnitude", "from 0 to 30"]),
    (["augmentation=standard", "augmentation.horizontal_flip=0.5"], ["augmentation.horizontal_flip", "mapping"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES])
def test_bad_values_name_the_key_and_what_is_allowed(overrides: list[str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_config(overrides)
    for text in expected:
        assert text in str(caught.value), str(caught.value)


def test_every_bad_value_is_refused_before_torch_is_imported() -> None:
    """One fresh interpreter checks every case above, then tells which of them loaded torch or Lightning."""
    cases = [args for args, _ in BAD_COMMAND_LINES] + [overrides for overrides, _ in BAD_VALUES]
    probe = (
        "import json, sys\n"
        "from cnnlab.config import check_command_line\n"
        "from cnnlab.errors import ConfigError\n"
        "report = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        check_command_line(args)\n"
        "        refused = False\n"
        "    except ConfigError:\n"
        "        refused = True\n"
        "    heavy = [m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules]\n"
        "    report.append([args, refused, heavy])\n"
        "print(json.dumps(report))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, json.dumps(cases)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [args for args, refused, _ in report if not refused] == []
    assert [(args, heavy) for args, _, heavy in report if heavy] == []


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.limit_train_batches=10", "trainer.limit_val_batches=0.5", "trainer.limit_test_batches=0"],
        ["trainer.precision=16", "trainer.devices=[0,1]", "trainer.accelerator=auto"],
        ["trainer.precision=bf16-mixed", "trainer.devices=auto", "trainer.deterministic=warn"],
        ["trainer.max_epochs=-1", "trainer.max_steps=100", "trainer.gradient_clip_val=0.5"],
        ["seed=0"],
        ["optimizer=sgd", "optimizer.nesterov=true"],
        ["optimizer=sgd", "optimizer.momentum=0"],
        ["scheduler=multistep", "scheduler.milestones=[5]"],
        ["model=mlp", "model.depth=0", "model.dropout=0.5", "model.activation=gelu"],
        ["model=plain_cifar", "model.depth=56"],
        ["model=vgg", "model.depth=11", "model.variant=lrn", "model.batch_norm=true"],
        ["model=lenet5", "model.variant=classic", "model.output=linear"],
        ["model=resnet", "model.depth=152", "model.weights=ResNet152_Weights.IMAGENET1K_V1", "model.freeze=[layer1]"],
        ["augmentation=[standard,colour,geometric,random_erasing]"],
        ["augmentation=randaugment", "+augmentation.randaugment.num_magnitude_bins=51",
         "augmentation.randaugment.magnitude=40"],
        ["data.eval_batch_size=256", "data.train_per_class=5", "data.num_workers=2"],
    ],
    ids=lambda v: " ".join(v),
)
def test_valid_values_pass(overrides: list[str]) -> None:
    compose_config(overrides)


def test_sweeps_of_valid_depths_pass() -> None:
    check_command_line(["-m", "model=resnet_cifar", "model.depth=8,20,110"])
    with pytest.raises(ConfigError, match="6n\\+2 layers; 21"):
        check_command_line(["-m", "model=resnet_cifar", "model.depth=20,21"])


# --- one source of truth for the models' options -----------------------------------------------------------

def test_the_families_table_loads_without_torch() -> None:
    probe = ("import sys, cnnlab.models.families, cnnlab.models; "
             "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_builder_takes_exactly_the_options_of_its_row() -> None:
    from cnnlab.models import MODELS
    from cnnlab.models.families import FAMILIES

    assert set(MODELS) == set(FAMILIES)
    for name, family in FAMILIES.items():
        parameters = list(inspect.signature(MODELS[name]).parameters)
        assert parameters[:3] == ["in_channels", "num_classes", "image_size"], name
        assert set(parameters[3:]) == set(family.options), name


def test_builders_name_what_the_table_lists() -> None:
    from cnnlab.models import activations, lecun1989, torchvision_models
    from cnnlab.models import families

    assert tuple(activations.ACTIVATIONS) == families.ACTIVATION_NAMES
    assert tuple(lecun1989.VARIANTS) == families.LECUN1989_VARIANTS
    assert tuple(torchvision_models.RESNETS) == families.RESNET_DEPTHS


def test_create_model_refuses_what_the_config_check_refuses() -> None:
    """Called directly (a notebook, a test), the builder path applies the same table with the same words."""
    from cnnlab.models import create_model

    with pytest.raises(ConfigError) as by_check:
        compose_config(["model=resnet", "model.depth=17"])
    with pytest.raises(ConfigError) as by_builder:
        create_model("resnet", in_channels=3, num_classes=10, image_size=32, depth=17)
    assert str(by_builder.value) == str(by_check.value)
    with pytest.raises(ConfigError, match="model.width"):
        create_model("mlp", in_channels=1, num_classes=10, image_size=8, width=0)
    with pytest.raises(ConfigError, match="set model.depth=11"):
        create_model("vgg", in_channels=3, num_classes=10, image_size=32, variant="lrn")  # the builder's depth 16
