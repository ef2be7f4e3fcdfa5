"""``cnnlab recipes list|show|validate``: the recipes (``experiment/`` configs) visible on the config search path.

A recipe comes from cnnlab's built-in tree, a folder (``--config-dir``, ``CNNLAB_RECIPES``) or an installed recipe
package (a Hydra search-path plugin adding ``pkg://...``). ``list`` and ``show`` import Hydra and OmegaConf only;
``validate`` builds and trains, so it loads torch when it gets there.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from omegaconf import OmegaConf

from cnnlab.config.flat_keys import flat_keys
from cnnlab.errors import ConfigError

GROUP = "experiment"


@dataclass
class Recipe:
    name: str
    kind: str  # built-in | folder | package
    where: str  # the folder, or the package's search-path entry
    file: str  # the YAML file (as far as it can be named)
    description: str
    hidden: list[str]  # lower-precedence places that hold the same name

    @property
    def source(self) -> str:
        return "built-in" if self.kind == "built-in" else f"{self.kind} {self.where}"


def _parser(verb: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"cnnlab recipes {verb}")
    parser.add_argument("--config-dir", "-cd", default=None, help="a recipe folder to add (as for cnnlab train)")
    return parser


def _describe(text: str) -> str:
    """The first comment line of a recipe that is not Hydra's ``# @package`` header."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        comment = stripped.lstrip("#").strip()
        if comment and not comment.startswith("@package"):
            return comment
    return ""


def _read(path: str, name: str) -> tuple[str, str]:
    """(file, text) of ``experiment/<name>.yaml`` in the search-path entry ``path`` (``file://...``, ``pkg://...``)."""
    from cnnlab.config.targets import config_file

    file = config_file(path, f"{GROUP}/{name}")
    text = ""
    try:
        if path.startswith("pkg://"):
            from importlib.resources import files

            module = path[len("pkg://"):].strip("/").replace("/", ".")
            text = files(module).joinpath(GROUP).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
        else:
            text = Path(file).read_text(encoding="utf-8")
    except Exception:
        pass
    return file, text


def find_recipes(config_dir: str | None = None) -> list[Recipe]:
    """Every recipe on the search path, in name order; a name is the first place's, as Hydra resolves it."""
    from hydra.core.object_type import ObjectType

    from cnnlab.config.compose import _Composer, register

    register()
    recipes: dict[str, Recipe] = {}
    with _Composer(config_dir, "config") as composer:
        for source in composer.loader.repository.get_sources():
            scheme = source.scheme()
            if source.provider in ("hydra", "schema") or scheme not in ("file", "pkg"):
                continue
            path = f"{scheme}://{source.path}"
            try:
                names = source.list(GROUP, ObjectType.CONFIG)
            except Exception:
                continue
            kind = {"main": "built-in"}.get(source.provider) or ("package" if scheme == "pkg" else "folder")
            where = source.path if scheme == "file" else f"{path} ({source.provider})"
            for name in names:
                if name in recipes:
                    recipes[name].hidden.append(f"{kind} {where}")
                    continue
                file, text = _read(path, name)
                recipes[name] = Recipe(name, kind, where, file, _describe(text), [])
    return [recipes[n] for n in sorted(recipes)]


def list_recipes(args: Sequence[str]) -> int:
    ns = _parser("list").parse_args(list(args))
    recipes = find_recipes(ns.config_dir)
    width = max([len(r.name) for r in recipes] + [6])
    source_width = max([len(r.source) for r in recipes] + [6])
    print(f"{'recipe':<{width}}  {'source':<{source_width}}  description")
    for r in recipes:
        hidden = f"  (hides {', '.join(r.hidden)})" if r.hidden else ""
        print(f"{r.name:<{width}}  {r.source:<{source_width}}  {r.description}{hidden}")
    print(f"\n{len(recipes)} recipes. Train one with: cnnlab train experiment=<recipe>; see what it changes with: "
          f"cnnlab recipes show <recipe>")
    return 0


# --------------------------------------------------------------------------------------------------- show


def _scalar(value: Any) -> str:
    import yaml

    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _render(tree: dict[str, Any], base: dict[str, Any], prefix: str = "", indent: int = 0) -> list[str]:
    """The config as YAML lines; a line the recipe changes starts with '*' and says what it was."""
    lines = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        pad = "  " * indent
        if isinstance(value, dict) and value:
            lines.append(f"  {pad}{key}:")
            lines += _render(value, base, path + ".", indent + 1)
            continue
        shown = _scalar(value)
        if path not in base:
            lines.append(f"* {pad}{key}: {shown}    # added by the recipe")
        elif base[path] != value:
            lines.append(f"* {pad}{key}: {shown}    # was {_scalar(base[path])}")
        else:
            lines.append(f"  {pad}{key}: {shown}")
    return lines


def show_recipe(args: Sequence[str]) -> int:
    parser = _parser("show")
    parser.add_argument("name")
    ns = parser.parse_args(list(args))
    from cnnlab.config.compose import _compose_with_hydra

    known = {r.name: r for r in find_recipes(ns.config_dir)}
    if ns.name not in known:
        import difflib

        close = difflib.get_close_matches(ns.name, list(known), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(f"No recipe '{ns.name}'.{hint} cnnlab recipes list shows them all.")
    recipe = known[ns.name]
    base_cfg = _compose_with_hydra([], ns.config_dir, "config")
    cfg = _compose_with_hydra([f"{GROUP}={ns.name}"], ns.config_dir, "config")
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    base_choices = dict(base_cfg.hydra.runtime.choices)
    tree = OmegaConf.to_container(cfg, resolve=False)
    base_tree = OmegaConf.to_container(base_cfg, resolve=False)
    for t in (tree, base_tree):
        t.pop("hydra", None)  # type: ignore[union-attr]
    base = flat_keys(base_tree)
    print(f"# {recipe.name}: {recipe.description}")
    print(f"# from {recipe.file}  ({recipe.source})")
    changed = [f"{g}={v} (default {base_choices.get(g)})" for g, v in choices.items()
               if g != GROUP and base_choices.get(g) != v]
    if changed:
        print(f"# chooses {', '.join(changed)}")
    lines = _render(tree, base)  # type: ignore[arg-type]
    print(f"# lines marked * are the recipe's ({sum(line.startswith('*') for line in lines)} of {len(lines)})")
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------------------------- validate
def _real_data_present(data: Any) -> bool:
    """Whether ``data`` (the composed ``data`` node) points at files in the dataset's own format."""
    if data.name == "digits":
        return True
    root = data.get("root")
    if root is None or OmegaConf.is_missing(data, "root"):
        return False
    root = Path(os.path.expanduser(str(root)))
    if "train_dir" in data:
        return (root / str(data.train_dir)).is_dir() and (root / str(data.test_dir)).is_dir()
    from cnnlab.data.sources import SOURCES

    source = SOURCES.get(str(data.name))
    if source is None:
        return False
    folder = source.folder(root)
    return folder.is_dir() and any(folder.iterdir())


def write_stand_in(data: Any, root: Path) -> Path:
    """Tiny files in the on-disk format of ``data``'s dataset (torchvision's layout), under ``root``."""
    from cnnlab import standin_data as s

    name = str(data.name)
    classes = int(data.num_classes or 3)
    if name in s.MNIST_FOLDERS:
        return s.write_mnist(root, name, classes=classes)
    if name == "cifar10":
        return s.write_cifar10(root)
    if name == "cifar100":
        return s.write_cifar100(root)
    if name == "svhn":
        return s.write_svhn(root)
    if "train_dir" in data:
        return s.write_image_folder(root, classes=classes, per_class=4 if classes < 100 else 2, size=36,
                                    splits=(str(data.train_dir), str(data.test_dir)))
    raise ConfigError(f"No stand-in data for the {name} dataset: put the real data at data.root.")


@contextlib.contextmanager
def _without_checksums(stand_in: bool) -> Iterator[None]:
    """torchvision checks the md5 of the official CIFAR/SVHN files, which generated stand-ins cannot match."""
    if not stand_in:
        yield
        return
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    saved = [(m, m.check_integrity) for m in (cifar, svhn)]
    try:
        for module, _ in saved:
            module.check_integrity = lambda *args, **kwargs: True  # type: ignore[assignment]
        yield
    finally:
        for module, original in saved:
            module.check_integrity = original  # type: ignore[assignment]


def _one_step(cfg: Any, stand_in_root: Path) -> str:
    """Build the model and data module of ``cfg`` and run one training step on the CPU; returns a note."""
    from omegaconf import open_dict

    from cnnlab.cli import _import_heavy

    run = _import_heavy("cnnlab.run")
    import lightning.pytorch as pl

    note = "real data"
    with open_dict(cfg):
        if not _real_data_present(cfg.data):
            write_stand_in(cfg.data, stand_in_root)
            cfg.data.root = str(stand_in_root)
            cfg.data.download = False
            note = "stand-in data"
            for key in ("train_per_class", "test_per_class"):
                if cfg.data.get(key) is not None:
                    cfg.data[key] = min(int(cfg.data[key]), 2)
        cfg.data.num_workers = 0
        if "cache_dir" in cfg.data:
            cfg.data.cache_dir = str(stand_in_root / "cache")
        cfg.model.compile = False
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with _without_checksums(note == "stand-in data"):
        datamodule = run.build_datamodule(cfg)
        datamodule.prepare_data()
        datamodule.setup("fit")
    classifier = run.build_classifier(cfg, datamodule)
    precision = str(cfg.trainer.get("precision") or "32-true")
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision if "bf16" in precision else "32-true",
                         max_steps=1, limit_train_batches=1, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(stand_in_root / "trainer"))
    trainer.fit(classifier, datamodule=datamodule)
    loss = trainer.callback_metrics.get("train/loss")
    if loss is not None and not math.isfinite(float(loss)):
        raise RuntimeError(f"the first step's loss is {float(loss)}")
    return note


def validate_recipes(args: Sequence[str]) -> int:
    parser = _parser("validate")
    parser.add_argument("names", nargs="*", help="recipes to check (default: every one visible)")
    ns = parser.parse_args(list(args))
    import logging
    import warnings

    from cnnlab.config import compose_config

    recipes = {r.name: r for r in find_recipes(ns.config_dir)}
    unknown = [n for n in ns.names if n not in recipes]
    if unknown:
        raise ConfigError(f"No recipe {', '.join(unknown)}. cnnlab recipes list shows them all.")
    chosen = [recipes[n] for n in ns.names] if ns.names else list(recipes.values())
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    rows = []
    width = max([len(r.name) for r in chosen] + [6])
    print(f"{'recipe':<{width}}  {'seconds':>7}  result")
    for recipe in chosen:
        started = time.perf_counter()
        try:
            cfg = compose_config([f"{GROUP}={recipe.name}"], config_dir=ns.config_dir)
            with tempfile.TemporaryDirectory(prefix="cnnlab-validate-") as scratch:
                note = _one_step(cfg, Path(scratch))
            outcome = f"ok ({note}, one CPU training step)"
            ok = True
        except BaseException as err:  # noqa: BLE001 - the table reports every kind of failure
            if isinstance(err, KeyboardInterrupt):
                raise
            message = getattr(err, "user_message", None) or f"{type(err).__name__}: {err}"
            outcome = "error: " + " ".join(str(message).split())
            ok = False
        seconds = time.perf_counter() - started
        rows.append((recipe.name, ok))
        print(f"{recipe.name:<{width}}  {seconds:7.1f}  {outcome}", flush=True)
    failed = [name for name, ok in rows if not ok]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} recipes ok" + (f"; failed: {', '.join(failed)}" if failed
                                                                     else "."))
    return 1 if failed else 0


VERBS = {"list": list_recipes, "show": show_recipe, "validate": validate_recipes}
USAGE = """\
usage: cnnlab recipes list [--config-dir DIR]          every recipe: name, source, description
       cnnlab recipes show NAME [--config-dir DIR]     the composed config, the recipe's lines marked *
       cnnlab recipes validate [--config-dir DIR] [NAME ...]
                                                       compose, check, build and train one CPU step each
Recipes come from cnnlab's conf/experiment, --config-dir, the folders in CNNLAB_RECIPES (os.pathsep-separated,
earlier first) and installed recipe packages (Hydra search-path plugins)."""


def main(args: Sequence[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb = VERBS.get(args[0])
    if verb is None:
        raise ConfigError(f"cnnlab recipes: unknown verb '{args[0]}'. Verbs: {', '.join(VERBS)}.")
    return verb(args[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
