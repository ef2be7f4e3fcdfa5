"""``cnnlab <verb> ...``: the command line. Imports nothing heavy until a config has been validated."""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import Callable, NoReturn, Sequence

from omegaconf import DictConfig

from cnnlab.errors import CnnlabError, ConfigError, RunInterrupted, TrainingDivergedError

USAGE = """\
usage: cnnlab <command> [arguments]

commands:
  train [overrides]          train and test a model; everything after `train` is Hydra's command line
                             (key=value overrides, group=option, -m for sweeps, --cfg job, --help);
                             --allow-target=pkg.Class lets a config instantiate a class off the allowlist
  resume <run_dir>           continue an interrupted, killed or crashed run in its folder, from its newest
                             checkpoint (checkpoints/last.ckpt), with the run's saved config
  eval ckpt_path=<file.ckpt> [overrides]
                             re-test a checkpoint of a finished run with the run's saved config
  analyze <run_dir> analysis=[features,confusion] [overrides]
                             study a finished run's best checkpoint (conf/analysis/): figures and numbers in
                             <run_dir>/analysis/<name>/, headline numbers in results.json; analyses: features,
                             confusion, filters, feature_maps, cam, adversarial, fooling
  summary [overrides]        per-layer table of the configured model: output shapes, parameters, MACs
  rerun <run_dir> [key=value ...]
                             a new run, in a new folder, from an old run's saved config (with changes)
  diff <run_a> <run_b>       config keys, versions, recipe hashes and results that differ between two runs
  recipes list|show|validate every recipe visible (built-in, --config-dir, CNNLAB_RECIPES, recipe packages);
                             show NAME: its composed config, changed lines marked; validate: CI's check
  sweep-summary <sweep_dir>  summary.csv, summary.md and plots of a finished or running sweep
  report [--runs DIR ...] [--run] [overrides]
                             the lectures' papers' tables with cnnlab's figures beside them (counts, mean ± std
                             over seeds, verdicts), from finished runs; --run first launches the missing ones

models: lenet5_bn (the default: LeNet-5 with batch norm), lenet5, linear, mlp, lecun1989, alexnet, vgg, googlenet,
        inception_v3, resnet, resnet_cifar, plain_cifar   (cnnlab train --help lists every config group)

examples:
  cnnlab train
  cnnlab train experiment=lenet5_mnist data.root=../shared/data
  cnnlab train -m optimizer.lr=0.01,0.1 model=mlp model.depth=1,2,4
  cnnlab train -m launcher=pool hydra.launcher.slots=2 optimizer.lr=0.01,0.1 data.batch_size=64,128
  cnnlab resume outputs/2026-01-01/12-00-00_123
  cnnlab eval ckpt_path=outputs/2026-01-01/12-00-00_123/checkpoints/last.ckpt
  cnnlab analyze outputs/2026-01-01/12-00-00_123 analysis=[features] analysis.features.pca=0.95
  cnnlab summary experiment=lecun1989_net5
  cnnlab report                 (the papers' tables beside cnnlab's runs; --run trains the missing ones)
  cnnlab train --help           (config groups and their options)
"""

log = logging.getLogger("cnnlab")


def _full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _report(verb: str, err: BaseException, log_file: Path | None = None) -> None:
    if _full_errors():
        traceback.print_exception(err)
    if isinstance(err, (CnnlabError, RunInterrupted)):
        message = err.user_message
    else:
        where = (f"the traceback is in {log_file}" if log_file is not None else
                 "set HYDRA_FULL_ERROR=1 to print the traceback")
        message = f"{type(err).__name__}: {' '.join(str(err).split())} (unexpected: {where})"
    print(f"cnnlab {verb}: error: {message}", file=sys.stderr)


def _log_traceback_to_file(err: BaseException) -> Path | None:
    """Keep an unexpected error's traceback in the run's log file only (the console gets one paragraph);
    returns that file, or None when there is none."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "Unexpected error", None,
                            (type(err), err, err.__traceback__))
    logged = None
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            logged = Path(handler.baseFilename)
    return logged


def _import_heavy(module: str) -> ModuleType:
    """Import a module that loads torch, torchvision and Lightning, with the cyclic garbage collector paused.

    Those imports create ~500k objects that live until the process exits and hold no garbage, yet the collector
    scans all of them again in each full collection: seven while they load (0.5 s of a run's start here), and
    every later one. Freezing moves them out of its reach for good (as the `gc.freeze` docs advise before
    forking DataLoader workers, whose pages then stay shared). Done on the first import only: later, freezing
    would also keep whatever garbage a previous run in this process left behind. They are unfrozen at exit, so
    that an exit through the interpreter's full teardown (a failed run) frees them as usual: frozen, native
    extensions (triton's) report them as leaks.
    """
    if module in sys.modules:
        return sys.modules[module]
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        gc.freeze()
        gc.enable()
        atexit.register(gc.unfreeze)


def _train_task(cfg: DictConfig) -> dict:
    """Hydra's task function for ``cnnlab train``. In a sweep a failed run is reported and returned, not raised,
    so the other trials still run; the sweep summary then sets the exit status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        if cfg.group is None:
            cfg.group = Path(hydra_cfg.sweep.dir).name  # one W&B group per sweep, whichever launcher runs it
        _relaunch_as_this_job(hydra_cfg)
    return _run(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task),
                in_sweep=hydra_cfg.mode == RunMode.MULTIRUN)


def _relaunch_as_this_job(hydra_cfg: DictConfig) -> None:
    """Make this process's command line the one that runs exactly this sweep job, in its folder.

    Lightning's DDP launcher starts a run's other processes by running ``sys.argv`` again, with Hydra's run dir
    (``hydra.run.dir``) appended: for a job of ``cnnlab train -m ...`` that would start the whole sweep in every
    process. Only done in the ``cnnlab train`` process itself; a launcher that runs jobs elsewhere sets its own.
    """
    from omegaconf import open_dict, read_write

    if sys.argv[1:2] != ["train"]:
        return
    flags = []
    typed = sys.argv[2:]
    for flag in ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp"):
        if flag in typed and typed.index(flag) + 1 < len(typed):
            flags += [flag, typed[typed.index(flag) + 1]]
    job = [o for o in hydra_cfg.overrides.hydra if not o.startswith(("hydra.mode=", "hydra.sweep."))]
    sys.argv = [sys.argv[0], "train", *flags, *hydra_cfg.overrides.task, *job]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def _run(cfg: DictConfig, run_dir: Path, overrides: list[str], in_sweep: bool = False,
         resume_from: Path | None = None) -> dict:
    """Train (or continue) the run in ``run_dir``; report its outcome on the console, run folder last.

    A run dir that holds an unfinished run of the same config (a requeued SLURM job, a sweep started again with
    its ``hydra.sweep.dir``) is continued from its checkpoint rather than started over.
    """
    verb = "resume" if resume_from is not None else "train"
    from cnnlab.config.targets import check_targets

    check_targets(cfg)  # again in the job itself: a sweeper's search space (choice(...)) picks recipes per trial
    run = None
    try:
        # torch and Lightning load here, after the config is known to be valid
        run = _import_heavy("cnnlab.run")
        if resume_from is None:
            resume_from = run.resumable_checkpoint(run_dir, cfg)
        results = run.train(cfg, run_dir, overrides, resume_from=resume_from)
        if not run.is_global_zero():  # another process of a distributed run: rank 0 reports
            return results
        top5 = results.get("test/acc_top5")  # none with five classes or fewer
        epochs = results.get("epochs", 0)
        log.info("test/acc %.4f  test/acc_top5 %s  (%d epoch%s, %.1f s)", results.get("test/acc", float("nan")),
                 "n/a" if top5 is None else f"{top5:.4f}", epochs, "" if epochs == 1 else "s",
                 results.get("train_time_s", 0))
    except RunInterrupted as err:  # not an error: the run stopped where it can continue
        print(f"cnnlab {verb}: {err.user_message} Continue it with: cnnlab resume {run_dir}", file=sys.stderr)
        print(run_dir)
        # A signal stops the whole command, sweep included, as Ctrl-C would stop any program.
        raise SystemExit(err.exit_status) from None
    except Exception as err:
        status = "diverged" if isinstance(err, TrainingDivergedError) else "failed"
        results = {"status": status, "error": getattr(err, "user_message", None) or str(err)}
        _report(verb, err, None if isinstance(err, CnnlabError) else _log_traceback_to_file(err))
        if not in_sweep:
            print(run_dir)
            raise SystemExit(1) from None
    print(run_dir)
    return results  # what a sweeper (Optuna) reads as the trial's outcome


def _train(args: Sequence[str]) -> int:
    from hydra import version
    from hydra._internal.utils import _run_hydra, get_args_parser

    from cnnlab.config import builtin_config_dir, check_command_line
    from cnnlab.config.compose import CONFIG_NAME, HYDRA_VERSION_BASE, register
    from cnnlab.config.targets import take_allow_flags

    args = take_allow_flags(args)  # --allow-target NAME: the user's, never a recipe's
    parser = get_args_parser()
    parsed = parser.parse_args(list(args))
    modes = [flag for flag, given in (("-m", parsed.multirun), ("--cfg", parsed.cfg), ("--info", parsed.info),
                                      ("--shell-completion", parsed.shell_completion), ("--run", parsed.run)) if given]
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)} cannot be combined: --cfg prints the config of one run, so give it "
                          f"the overrides of one trial without -m (e.g. cnnlab train launcher=pool --cfg hydra).")
    if not parsed.multirun and not parsed.cfg:
        _refuse_sweeps_in_a_single_run(parsed.overrides)
    check_command_line(args)
    register()
    # What @hydra.main does, with the arguments given rather than read from sys.argv: sys.argv stays the command
    # that was typed, which Lightning's DDP launcher runs again for every other process of a run.
    version.setbase(HYDRA_VERSION_BASE)
    from cnnlab.sweeps.callback import SweepSummaryCallback

    try:
        _run_hydra(args=parsed, args_parser=parser, task_function=_train_task,
                   config_path=str(builtin_config_dir()), config_name=CONFIG_NAME)
    except SystemExit as stop:
        started = SweepSummaryCallback.started
        if started is None or SweepSummaryCallback.last_summary is not None:
            raise
        # The sweep stopped before its end: summarise the trials it has, then exit as it stopped.
        SweepSummaryCallback.summarize(started)
        if SweepSummaryCallback.last_summary is not None:
            print(SweepSummaryCallback.last_summary.sweep_dir / "summary.md")
        raise

    sweep = SweepSummaryCallback.last_summary
    if sweep is None:
        if SweepSummaryCallback.last_error is not None:  # -m ran, but no summary could be written
            print(f"cnnlab train: no sweep summary: {SweepSummaryCallback.last_error}", file=sys.stderr)
            return 1
        return 0  # a single run: it raised SystemExit itself if it failed
    print(sweep.sweep_dir / "summary.md")
    if sweep.exit_status:
        print(f"cnnlab train: {sweep.outcome}; not completed: "
              f"{', '.join(f'{t.run_dir} ({t.status})' for t in sweep.failed)}", file=sys.stderr)
    return sweep.exit_status


def _refuse_sweeps_in_a_single_run(overrides: Sequence[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - the config check explains overrides it cannot read
        return
    swept = [o.input_line for o in parsed if o.is_sweep_override()]
    if swept:
        key = swept[0].split("=", 1)[0]
        raise ConfigError(f"{swept[0]} lists several values, which is a sweep: add -m to run one trial per value "
                          f"(cnnlab train -m {' '.join(overrides)}), or write {key}=[...] for a list value.")


def _resume(args: Sequence[str]) -> int:
    from cnnlab.config.targets import take_allow_flags

    # The other processes of a distributed run are started with Hydra's run dir and job name appended.
    args = [a for a in take_allow_flags(args) if not a.startswith("hydra.")]
    if len(args) != 1 or args[0].startswith("-"):
        if args and args[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        raise ConfigError("cnnlab resume needs exactly one run folder, e.g. cnnlab resume outputs/2026-01-01/12-00-00_123 "
                          "(the folder cnnlab train printed last).")
    from cnnlab.config.saved_run import RESUMABLE, load_saved_run

    saved = load_saved_run(args[0], verb="resume")
    if saved.status == "completed":
        accuracy = saved.results.get("test/acc")
        tested = f" (test/acc {accuracy:.4f})" if isinstance(accuracy, float) else ""
        print(f"cnnlab resume: {saved.run_dir} has completed{tested}: nothing to resume.")
        return 0
    if saved.status not in RESUMABLE:
        raise ConfigError(f"cnnlab resume: {saved.run_dir} {saved.status} ({saved.results.get('error')}); resuming "
                          f"would repeat that. Start a new run with other settings (e.g. a lower optimizer.lr).")
    last = saved.run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ConfigError(f"cnnlab resume: {saved.run_dir} stopped before its first checkpoint, so there is nothing to "
                          f"continue from. Start it again: cnnlab train {' '.join(saved.overrides)}".rstrip() + ".")
    if saved.hydra.mode == "MULTIRUN" and saved.config.get("group") is None:
        saved.config.group = saved.run_dir.parent.name  # the sweep's W&B group, as when the trial started
    _run(saved.config, saved.run_dir, saved.overrides, resume_from=last)
    return 0


def _eval(args: Sequence[str]) -> int:
    paths = [a.split("=", 1)[1] for a in args if a.startswith("ckpt_path=")]
    if len(paths) != 1 or any(a in ("-h", "--help") for a in args):
        if not any(a in ("-h", "--help") for a in args):
            raise ConfigError("cnnlab eval needs exactly one ckpt_path=<run_dir>/checkpoints/<file>.ckpt.")
        print(USAGE)
        return 0
    result = _import_heavy("cnnlab.run").evaluate(paths[0], [a for a in args if not a.startswith("ckpt_path=")])
    for key, value in result.items():
        print(f"{key:>16}  {value}")
    return 0


def _analyze(args: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    from cnnlab.analysis.request import prepare

    request = prepare(args)  # the run folder, its config, the analyses' options: checked before torch loads
    headline = _import_heavy("cnnlab.analysis.common").analyze_run(request.run_dir, request.config, request.names,
                                                                  request.checkpoint)
    for key, value in headline.items():
        print(f"{key:>40}  {value:.4f}" if isinstance(value, float) else f"{key:>40}  {value}")
    print(request.run_dir / "analysis")
    return 0


def _summary(args: Sequence[str]) -> int:
    from hydra._internal.utils import get_args_parser  # Hydra's parser, so --config-dir reads as in `train`

    from cnnlab.config import compose_config

    from cnnlab.config.targets import take_allow_flags

    ns = get_args_parser().parse_args(take_allow_flags(args))
    cfg = compose_config(ns.overrides, config_dir=ns.config_dir)
    net = _import_heavy("cnnlab.models.build").build_model(cfg)
    from cnnlab.layer_table import summarize

    print(f"{cfg.model.name} on {cfg.data.name} ({cfg.data.num_classes} classes)")
    print(summarize(net, (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)).table())
    return 0


def _sweep_summary(args: Sequence[str]) -> int:
    from pathlib import Path

    if len(args) != 1 or not Path(args[0]).is_dir():
        raise ConfigError("cnnlab sweep-summary needs the folder of one sweep, e.g. outputs/multirun/<date>/<time>_<pid>.")
    from cnnlab.sweeps.summary import summarize_sweep

    summary = summarize_sweep(args[0])
    print((summary.sweep_dir / "summary.md").read_text())
    return 1 if summary.failed else 0


def _rerun(args: Sequence[str]) -> int:
    from cnnlab.config.targets import take_allow_flags
    from cnnlab.rerun import rerun

    return rerun(take_allow_flags(args), _run)


def _diff(args: Sequence[str]) -> int:
    from cnnlab.rerun import diff

    return diff(args)


def _paper_report(args: Sequence[str]) -> int:
    from cnnlab.report.command import main as report  # checks its arguments before torch loads

    return report(args)


def _recipes(args: Sequence[str]) -> int:
    from cnnlab.recipes import main as recipes  # Hydra only; `validate` loads torch when it trains

    return recipes(args)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train": _train, "resume": _resume, "eval": _eval, "summary": _summary,
    "analyze": _analyze, "sweep-summary": _sweep_summary, "recipes": _recipes,
    "rerun": _rerun, "diff": _diff, "report": _paper_report}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verb, rest = (args[0], args[1:]) if args else ("help", [])
    if verb not in COMMANDS and verb not in ("-h", "--help", "help"):
        print(f"cnnlab: unknown command '{verb}'. Commands: {', '.join(COMMANDS)}.\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if verb not in COMMANDS:
            print(USAGE)
            return 0
        return COMMANDS[verb](rest)
    except KeyboardInterrupt:  # Ctrl-C before a run had its own handling in place (while torch loads, say)
        print(f"cnnlab {verb}: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`cnnlab train --help | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ConfigError as err:
        _report(verb, err)
        return 2
    except (CnnlabError, Exception) as err:
        _report(verb, err)
        return 1


def _exit_without_teardown(status: int) -> NoReturn:
    """Exit the way the interpreter would, minus freeing, one by one, every object torch and Lightning created.

    That teardown takes ~0.8 s per command, as long as a short training run's validation. Everything a command
    writes has been written and closed when it returns; what still has to happen at exit, the atexit handlers
    (logging's flush, W&B's and multiprocessing's cleanup), runs first. While a thread that is not a daemon is
    still running, the interpreter's own exit waits for it as usual.
    """
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`cnnlab ... | head`) or stream
            pass
    os._exit(status)


def entry_point() -> None:
    try:
        status = main()
    except SystemExit as stop:  # a run that stopped (Ctrl-C, a failed single run) exits as quickly as one that ended
        status = stop.code if isinstance(stop.code, int) else 1
    _exit_without_teardown(status)
