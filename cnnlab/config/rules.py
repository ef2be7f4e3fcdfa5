"""The valid values of each config group's keys, as tables of ``Rule``s (see ``cnnlab.ranges``).

``validate`` applies them to a composed config before torch is imported. A key without a rule here is either
checked by its type alone (the schemas) or by a check that involves other keys (``validate``). Each range is
what torch or Lightning would accept or what makes sense for the run, whichever is narrower.
"""

from __future__ import annotations

from typing import Any

from cnnlab.ranges import Flag, Number, OneOf, Rule, Satisfies, Text, Whole

POSITIVE = Number(0, low_open=True)
NON_NEGATIVE = Number(0)
PROBABILITY = Number(0, 1)
BELOW_ONE = Number(0, 1, high_open=True)  # [0, 1)
BETWEEN_0_AND_1 = Number(0, 1, low_open=True, high_open=True)  # (0, 1)
SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit; Lightning replaces larger ones with 0

ROOT: dict[str, Rule] = {
    "seed": Rule(Whole(0, SEED_MAX), message=(
        f"seed must be a whole number from 0 to {SEED_MAX} (it seeds Python's, NumPy's and torch's random "
        f"generators), got {{value}}. For example: seed=42.")),
}

DATA: dict[str, Rule] = {
    "batch_size": Rule(Whole(1), meaning="the number of images in a training batch", hint="For example: 64."),
    "eval_batch_size": Rule(Whole(1, optional=True), meaning="the number of images in a validation or test batch",
                            hint="Leave it null to evaluate in batches of data.batch_size."),
    "num_workers": Rule(Whole(0, optional=True), meaning="the number of DataLoader worker processes",
                        hint="0 loads the data in the training process; null uses min(4, the available cores)."),
    "prefetch_factor": Rule(Whole(1), meaning="the number of batches each DataLoader worker keeps ready",
                            hint="2 to 4 keep a GPU fed; more only costs memory."),
    "persistent_workers": Rule(Flag()),
    "pin_memory": Rule(OneOf((True, False, None)), hint="Leave it null to pin batches only when training on a GPU."),
    "gpu_decode": Rule(Flag()),
    "val_split": Rule(BELOW_ONE, meaning="the fraction of the training split held out to pick the best "
                                         "checkpoint and stop early",
                      hint="0 trains on all of it and validates on nothing: then set "
                           "callbacks.model_checkpoint.monitor=null (the last epoch is tested) and "
                           "trainer.limit_val_batches=0."),
    "num_classes": Rule(Whole(2, optional=True), meaning="the number of classes",
                        hint="Leave it null to count them from the class folders (folder datasets)."),
    "channels": Rule(Whole(1), meaning="the number of colour channels of the images (1 grey, 3 RGB)"),
    "image_size": Rule(Whole(1), meaning="the side, in pixels, of the square images the model sees"),
    "train_per_class": Rule(Whole(1, optional=True), meaning="the number of training images kept per class",
                            hint="Leave it null to keep them all."),
    "test_per_class": Rule(Whole(1, optional=True), meaning="the number of test images kept per class",
                           hint="Leave it null to keep them all."),
    # image folders' cache (cnnlab.data.folder_cache)
    "cache": Rule(OneOf(("auto", "memory", "off")),
                  hint="It says whether an image folder is decoded once into a cache and trained from it: auto "
                       "when it fits in data.cache_memory_fraction of the available memory, memory always, off "
                       "never (every image decoded every epoch)."),
    "cache_size": Rule(Whole(1, optional=True), meaning="the side, in pixels, of the squares a folder cache stores",
                       hint="Leave it null for data.image_size / 0.875."),
    "cache_memory_fraction": Rule(Number(0, 1, low_open=True), meaning="the share of the available memory a "
                                                                     "folder cache may take with data.cache=auto",
                                  hint="For example: 0.5."),
    "skip_bad_images": Rule(Flag(), hint="true leaves undecodable image files out and lists them."),
    "train_size": Rule(Whole(1, optional=True), meaning="the number of training images kept (a fixed random subset)",
                       hint="Leave it null to keep them all."),
    "test_size": Rule(Whole(1, optional=True), meaning="the number of test images kept (a fixed random subset)",
                      hint="Leave it null to keep them all."),
}

OPTIMIZER: dict[str, Rule] = {
    "lr": Rule(POSITIVE, meaning="the learning rate", hint="Typical values: 0.1 for SGD, 0.001 for Adam."),
    "momentum": Rule(BELOW_ONE, hint="Typical value: 0.9; 0 turns momentum off."),
    "dampening": Rule(PROBABILITY),
    "weight_decay": Rule(NON_NEGATIVE, meaning="the L2 penalty", hint="0 turns it off; typical values: 1e-4 to 5e-4."),
    "eps": Rule(POSITIVE, meaning="the term added to the denominator for numerical stability",
                hint="Typical value: 1e-8."),
    "mu": Rule(POSITIVE, meaning="the damping added to each weight's curvature (optimizer=sdlm)",
               hint="LeNet-5's paper: 0.02."),
    "samples": Rule(Whole(1), meaning="the number of training patterns each curvature estimate uses (optimizer=sdlm)",
                    hint="The paper: 500."),
    "alpha": Rule(BELOW_ONE, meaning="the smoothing constant of the squared-gradient average",
                  hint="Typical value: 0.99."),
}
ADAM_BETAS = Rule(Satisfies(lambda b: isinstance(b, list) and len(b) == 2 and all(BELOW_ONE.accepts(x) for x in b),
                            "two numbers in [0, 1)"),
                  meaning="the pair of decay rates of Adam's gradient and squared-gradient averages",
                  hint="Typical value: [0.9, 0.999].")


def _increasing_positive(values: Any) -> bool:
    return (isinstance(values, list) and len(values) > 0 and all(Whole(1).accepts(v) for v in values)
            and all(a < b for a, b in zip(values, values[1:])))


SCHEDULER: dict[str, Rule] = {
    "warmup": Rule(Whole(0), meaning="the length of the linear warm-up in scheduler.interval units",
                   hint="0 starts at the full rate."),
    "warmup_start_factor": Rule(Number(0, 1, low_open=True), meaning="the fraction of the rate the warm-up starts at"),
    "step_size": Rule(Whole(1), meaning="the number of epochs (steps with interval=step) between two decays",
                      hint="For example: scheduler.step_size=30."),
    "gamma": Rule(POSITIVE, meaning="the factor the rate is multiplied by at each decay", hint="Typical value: 0.1."),
    "milestones": Rule(Satisfies(_increasing_positive, "a list of increasing whole numbers of at least 1"),
                       meaning="the list of epochs (steps with interval=step) at which the rate decays",
                       hint="For example: scheduler.milestones=[30,60]."),
    "factors": Rule(Satisfies(lambda v: v is None or (isinstance(v, list) and len(v) > 0 and all(
        POSITIVE.accepts(x) for x in v)), "null or a list of positive numbers, one per milestone"),
        meaning="the multipliers of the initial rate from each milestone on",
        hint="For example: scheduler.milestones=[2,5] scheduler.factors=[0.4,0.2]."),
    "t_max": Rule(Whole(1, optional=True), meaning="the length of the cosine's half period",
                  hint="Leave it null to anneal over the whole run."),
    "eta_min": Rule(NON_NEGATIVE, meaning="the rate the cosine anneals to"),
    "max_lr": Rule(Number(0, low_open=True, optional=True), meaning="the one-cycle schedule's peak rate",
                   hint="Leave it null to peak at optimizer.lr."),
    "pct_start": Rule(BETWEEN_0_AND_1, meaning="the fraction of the cycle spent raising the rate",
                      hint="Typical value: 0.3."),
    "anneal_strategy": Rule(OneOf(("cos", "linear"))),
    "div_factor": Rule(POSITIVE, meaning="max_lr divided by the starting rate", hint="Typical value: 25."),
    "final_div_factor": Rule(POSITIVE, meaning="the starting rate divided by the final rate",
                             hint="Typical value: 1e4."),
    "mode": Rule(OneOf(("min", "max")), hint="min for a loss, max for an accuracy."),
    "factor": Rule(BETWEEN_0_AND_1, meaning="the factor the rate is multiplied by when the metric stops improving",
                   hint="Typical value: 0.1."),
    "patience": Rule(Whole(0), meaning="the number of epochs without improvement before the rate drops"),
    "min_lr": Rule(NON_NEGATIVE, meaning="the lowest rate the plateau schedule goes to"),
}

LOSS: dict[str, Rule] = {
    "label_smoothing": Rule(BELOW_ONE, hint="0 turns it off; a typical value is 0.1."),
    "l1": Rule(NON_NEGATIVE, meaning="the coefficient of the L1 penalty on the weights", hint="0 turns it off."),
    "targets": Rule(Satisfies(lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and v[0] != v[1]),
        "null or a pair [off, on] of different numbers"),
        meaning="the values loss=mse trains the outputs towards (off for the other classes, on for the image's)",
        hint="LeCun's 1989 networks: loss.targets=[-1,1] with model.output=scaled_tanh; null compares softmax "
             "probabilities to one-hot vectors."),
    "rubbish_penalty": Rule(NON_NEGATIVE, meaning="loss=map's fixed penalty of the rubbish class (LeCun et al. "
                            "1998's j)", hint="The paper's criterion uses a small positive constant; 0.1 is usual."),
}


def _batch_limit(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return PROBABILITY.accepts(value) or (value > 1 and value.is_integer())
    return Whole(0).accepts(value)


def _devices(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value == -1 or value >= 1
    if isinstance(value, list):
        return len(value) > 0 and all(Whole(0).accepts(v) for v in value) and len(set(value)) == len(value)
    if isinstance(value, str):
        parts = [p.strip() for p in value.strip().strip(",").split(",")]
        return value.strip() in ("auto", "-1") or all(p.isdigit() for p in parts)
    return False


# Lightning's Trainer(precision=...) and Trainer(accelerator=...) names.
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed",
              "bf16-mixed", "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
BATCH_LIMIT = Satisfies(_batch_limit, "a whole number of batches (0 or more) or a fraction in [0, 1], or null")

TRAINER: dict[str, Rule] = {
    "accelerator": Rule(OneOf(ACCELERATORS), hint="trainer=cpu and trainer=gpu set it with the matching precision."),
    "devices": Rule(Satisfies(_devices, "a device count of at least 1, -1 (all), 'auto', or a list of device "
                                        "indices such as [0,1]")),
    "num_nodes": Rule(Whole(1), meaning="the number of machines"),
    "precision": Rule(Satisfies(OneOf(PRECISIONS).accepts, "one of Lightning's precisions: " + ", ".join(
        p for p in PRECISIONS if isinstance(p, str) and "-" in p) + " (or 64, 32, 16, bf16)"),
        hint="32-true on CPUs; bf16-mixed on recent GPUs."),
    "max_epochs": Rule(Whole(-1), hint="-1 trains until trainer.max_steps."),
    "max_steps": Rule(Whole(-1), hint="-1 leaves the length to trainer.max_epochs."),
    "gradient_clip_val": Rule(Number(0, optional=True), meaning="the largest gradient norm (or value) kept",
                              hint="Leave it null to clip nothing."),
    "gradient_clip_algorithm": Rule(OneOf(("norm", "value"))),
    "accumulate_grad_batches": Rule(Whole(1), meaning="the number of batches whose gradients add up to one step",
                                    hint="1 steps after every batch."),
    "deterministic": Rule(OneOf((True, False, "warn", None))),
    "log_every_n_steps": Rule(Whole(1), meaning="how often (in training steps) metrics are logged"),
    "check_val_every_n_epoch": Rule(Whole(1), meaning="how often (in epochs) the model is validated"),
    "limit_train_batches": Rule(BATCH_LIMIT),
    "limit_val_batches": Rule(BATCH_LIMIT),
    "limit_test_batches": Rule(BATCH_LIMIT),
    "num_sanity_val_steps": Rule(Whole(-1, optional=True), hint="-1 runs the whole validation set, 0 none."),
    "enable_model_summary": Rule(Flag()),
}


def _pair(low: float | None, high: float | None, positive: bool = False) -> Satisfies:
    """A [min, max] pair within [low, high]."""
    bound = Number(low, high, low_open=positive)

    def test(value: Any) -> bool:
        return (isinstance(value, list) and len(value) == 2 and all(bound.accepts(v) for v in value)
                and value[0] <= value[1])

    within = bound.words.removeprefix("a number").strip()
    return Satisfies(test, f"a pair [min, max] of numbers {within}".strip())


def _factor(value: Any) -> bool:
    """colour_jitter's brightness, contrast, saturation: a spread of at least 0, or a [min, max] pair of them."""
    return NON_NEGATIVE.accepts(value) or _pair(0, None).test(value)


def _hue(value: Any) -> bool:
    return Number(0, 0.5).accepts(value) or _pair(-0.5, 0.5).test(value)


def _spread(value: Any) -> bool:
    """degrees, shear: a spread of at least 0 (drawn from [-x, x]) or a [min, max] pair."""
    return NON_NEGATIVE.accepts(value) or _pair(None, None).test(value)


PROBABILITY_RULE = Rule(PROBABILITY, meaning="the probability of applying it to an image")
FACTOR = Rule(Satisfies(_factor, "a number of at least 0, or a [min, max] pair of them"))
SPREAD = Rule(Satisfies(_spread, "an angle of at least 0 (in degrees), or a [min, max] pair of angles"))

# augmentation.<entry>.<option>: the options whose range torchvision (or cnnlab's batched versions) would refuse
# or silently misread. Entries and options not listed are checked when the pipeline is built.
AUGMENTATION: dict[str, dict[str, Rule]] = {
    "horizontal_flip": {"p": PROBABILITY_RULE},
    "vertical_flip": {"p": PROBABILITY_RULE},
    "random_crop": {"padding": Rule(Whole(0), meaning="the zero padding, in pixels, around the image before the crop")},
    "colour_jitter": {"brightness": FACTOR, "contrast": FACTOR, "saturation": FACTOR,
                      "hue": Rule(Satisfies(_hue, "a number in [0, 0.5], or a [min, max] pair in [-0.5, 0.5]"))},
    "random_affine": {"degrees": SPREAD, "shear": SPREAD,
                      "translate": Rule(Satisfies(lambda v: isinstance(v, list) and len(v) == 2
                                                  and all(PROBABILITY.accepts(x) for x in v),
                                                  "a pair of fractions in [0, 1] (horizontal, vertical)")),
                      "scale": Rule(_pair(0, None, positive=True)),
                      "squeeze": Rule(Satisfies(lambda v: v is None or Number(0, 1, high_open=True).accepts(v)
                                                or _pair(-1, 1).test(v) and -1 < v[0] and v[1] < 1,
                                                "a number in [0, 1), or a [min, max] pair in (-1, 1)"),
                                      meaning="the spread of LeCun's squeezing (width x (1-s), height x (1+s))")},
    "random_rotation": {"degrees": SPREAD},
    "random_perspective": {"p": PROBABILITY_RULE, "distortion_scale": Rule(PROBABILITY)},
    "randaugment": {"num_ops": Rule(Whole(0), meaning="the number of operations applied to each image"),
                    "magnitude": Rule(Whole(0, 30), meaning="the strength of each operation",
                                      hint="Typical value: 9.")},
    "random_erasing": {"p": PROBABILITY_RULE,
                       "scale": Rule(_pair(0, 1), meaning="the range of the erased area, as a fraction of the image"),
                       "ratio": Rule(_pair(0, None, positive=True), meaning="the range of the erased "
                                                                            "rectangle's aspect ratio")},
}

TRAINING: dict[str, Rule] = {
    "divergence_factor": Rule(Number(1, low_open=True), meaning="how many times its reference the training loss may "
                                                              "grow before the run counts as diverged",
                              hint="Typical value: 100."),
    "checkpoint_every_n_steps": Rule(Whole(1, optional=True), meaning="how often (in training steps) "
                                                                      "checkpoints/last.ckpt is refreshed within an epoch",
                                     hint="Leave it null to save at epoch ends (and by time) only."),
    "checkpoint_every_n_minutes": Rule(Number(0, optional=True, low_open=True),
                                       meaning="how often (in minutes) checkpoints/last.ckpt is refreshed within an epoch",
                                       hint="Leave it null to save at epoch ends (and by step count) only."),
}

ATTACKS = ("fgsm", "pgd")  # cnnlab.attacks.ATTACKS (that module imports torch)
EPSILON = Number(0, 1, low_open=True)

# training.adversarial.<option>
ADVERSARIAL_TRAINING: dict[str, Rule] = {
    "attack": Rule(OneOf((None, *ATTACKS)), hint="Leave it null for standard training."),
    "epsilon": Rule(EPSILON, meaning="the L-infinity radius of the attack, in pixel units (images in [0, 1])",
                    hint="For example: 0.1 on MNIST, 8/255 = 0.0314 on CIFAR-10."),
    "fraction": Rule(Number(0, 1, low_open=True), meaning="the fraction of each training batch replaced by its "
                                                          "adversarial version",
                     hint="1.0 trains on adversarial images only (Madry et al.); 0.5 half and half (Goodfellow et "
                          "al.)."),
    "steps": Rule(Whole(1), meaning="the number of PGD steps per example", hint="Typical values: 7 to 40."),
    "step_size": Rule(Number(0, 1, low_open=True, optional=True), meaning="the size of each PGD step, in pixel units",
                      hint="Leave it null for 2.5 * epsilon / steps."),
    "random_start": Rule(Flag()),
}

# The validation metrics a run logs every epoch that can pick the best checkpoint and trial (`selection`), and the
# end of each that is best. Test metrics are never among them: the test split is reported, not chosen on.
SELECTION_METRICS: dict[str, str] = {"val/loss": "min", "val/acc": "max"}


# --- analyses (conf/analysis/, cnnlab/analysis/) -----------------------------------------------------------------
FEATURE_CLASSIFIERS = ("linear_svm", "rbf_svm", "knn", "logistic", "dino_knn")
KNN_METRICS = ("euclidean", "cosine", "manhattan", "chebyshev", "minkowski", "l1", "l2", "cityblock")


def _pca_components(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1
    return isinstance(value, float) and 0 < value < 1


def _names_from(allowed: tuple[str, ...]) -> Satisfies:
    return Satisfies(lambda v: isinstance(v, (list, tuple)) and all(x in allowed for x in v),
                     "a list of names from: " + ", ".join(allowed))


def epsilon_key(epsilon: float) -> str:
    """ε as the headline numbers name it (``fgsm_acc@0.0314``): a decimal number of three significant digits."""
    from decimal import Decimal

    return format(Decimal(f"{float(epsilon):.3g}"), "f")


def _epsilons(values: Any) -> bool:
    if not isinstance(values, (list, tuple)) or not values:
        return False
    if not all(Number(0, 1).accepts(v) for v in values):
        return False
    return len({epsilon_key(v) for v in values}) == len(values)  # distinct names in results.json


def _target(value: Any) -> bool:
    return value in ("next", "random") or Whole(0).accepts(value)


ADVERSARIAL_ANALYSIS: dict[str, Rule] = {
    "attacks": Rule(Satisfies(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(x in ATTACKS for x in v),
                              "a non-empty list of attacks from: " + ", ".join(ATTACKS)),
                    hint="For example: analysis.adversarial.attacks=[fgsm,pgd]."),
    "epsilons": Rule(Satisfies(_epsilons, "a non-empty list of distinct numbers in [0, 1] (pixel units: the images "
                                          "are in [0, 1])"),
                     meaning="the L-infinity radii the attacks are measured at",
                     hint="For example: analysis.adversarial.epsilons=[0,0.05,0.1,0.2,0.3] (8/255 = 0.0314)."),
    "targeted": Rule(Flag()),
    "target": Rule(Satisfies(_target, "next (the class after the true one), random, or a class index (0 or more)")),
    "pgd_steps": Rule(Whole(1), meaning="the number of PGD steps", hint="Typical values: 10 to 40."),
    "pgd_step_size": Rule(Number(0, 1, low_open=True, optional=True), meaning="the size of each PGD step, in pixel "
                                                                               "units",
                          hint="Leave it null for 2.5 * epsilon / steps."),
    "pgd_random_start": Rule(Flag()),
    "pgd_restarts": Rule(Whole(1), meaning="the number of random restarts of PGD (each image keeps its worst)"),
    "max_test": Rule(Whole(1, optional=True), meaning="the number of test images attacked",
                     hint="Leave it null to attack them all."),
    "batch_size": Rule(Whole(1), meaning="the number of images attacked at once"),
    "examples": Rule(Whole(0), meaning="the number of images in the lecture's figure (image + ε × sign of the "
                                       "gradient = adversarial image)"),
    "example_epsilon": Rule(EPSILON, meaning="the ε of the lecture's figure", hint="The lecture's: 0.05."),
    "example_attack": Rule(OneOf(ATTACKS)),
}

FOOLING_ANALYSIS: dict[str, Rule] = {
    "target_confidence": Rule(Number(0, 1, low_open=True, high_open=True),
                              meaning="the softmax probability of the target class at which an image counts as "
                                      "fooling the network", hint="Nguyen et al.: 0.99 and more."),
    "max_steps": Rule(Whole(1), meaning="the most gradient-ascent steps per image"),
    "step_size": Rule(Number(0, 1, low_open=True), meaning="the size of each step, in pixel units (images in [0, 1])",
                      hint="For example: 0.01."),
    "classes": Rule(Satisfies(lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) > 0
                                                      and all(Whole(0).accepts(x) for x in v)),
                              "a list of class indices (0 or more), or null for every class")),
    "seed": Rule(Whole(0), meaning="the seed of the noise the images start from"),
    "batch_size": Rule(Whole(1), meaning="the number of images optimised at once"),
}

def _layer_list(example: str) -> Rule:
    return Rule(Satisfies(lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) > 0
                                                  and all(isinstance(x, str) for x in v)),
                          f"a list of layer names as cnnlab summary prints them (e.g. {example}), or null"))


# The test images an analysis that shows single images draws (cnnlab.analysis.selection).
SHOWN_IMAGES: dict[str, Rule] = {
    "images": Rule(Whole(1), meaning="the number of test images shown"),
    "indices": Rule(Satisfies(lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) > 0
                                                      and all(Whole(0).accepts(i) for i in v)),
                              "a list of test-split indices (whole numbers from 0), or null"),
                    hint="For example: [0,7,42]; null picks them with images and per_class."),
    "per_class": Rule(Flag(), hint="true shows the first test image of each class."),
}
CAM_METHODS = ("cam", "gradcam", "gradcampp")

# analysis.<name>.<option>. Layer names need the model and are checked when it is built (with the valid ones listed).
ANALYSIS: dict[str, dict[str, Rule]] = {
    "features": {
        "layers": Rule(Satisfies(lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) > 0
                                                         and all(isinstance(x, str) for x in v)),
                                 "a list of layer names as cnnlab summary prints them (e.g. [features.8]), or null"),
                       hint="null takes the input of the final classifier (the penultimate representation)."),
        "max_train": Rule(Whole(1, optional=True), meaning="the number of training images whose features are taken",
                          hint="Leave it null to take them all."),
        "max_test": Rule(Whole(1, optional=True), meaning="the number of test images whose features are taken",
                         hint="Leave it null to take them all."),
        "fit_max_train": Rule(Whole(1, optional=True), meaning="the number of training features the scikit-learn "
                                                               "classifiers fit on", hint="null fits on all."),
        "standardize": Rule(Flag()),
        "pca": Rule(Satisfies(_pca_components, "a number of components (a whole number of at least 1), a variance "
                                               "fraction in (0, 1), or null"),
                    hint="For example: analysis.features.pca=50 or analysis.features.pca=0.95."),
        "classifiers": Rule(_names_from(FEATURE_CLASSIFIERS)),
        "svm_c": Rule(POSITIVE, meaning="the SVMs' inverse regularisation strength", hint="Typical value: 1.0."),
        "knn_k": Rule(Whole(1), meaning="the number of neighbours of the k-NN classifier"),
        "knn_metric": Rule(OneOf(KNN_METRICS)),
        "dino_k": Rule(Whole(1), meaning="the number of neighbours that vote in DINO's weighted k-NN",
                       hint="DINO's default: 20."),
        "dino_temperature": Rule(POSITIVE, meaning="the temperature T of the votes exp(similarity / T)",
                                 hint="DINO's default: 0.07."),
        "batch_size": Rule(Whole(1), meaning="the number of images per forward pass"),
        "network": Rule(OneOf(("trained", "pretrained")),
                        hint="pretrained analyses the weights the run started from (model.weights; without it, the "
                             "network as initialised: random features)."),
    },
    "confusion": {
        "top_pairs": Rule(Whole(0), meaning="the number of most-confused class pairs listed"),
        "gallery": Rule(Whole(0), meaning="the number of misclassified test images shown"),
        "batch_size": Rule(Whole(1), meaning="the number of images per forward pass"),
    },
    "filters": {
        "layers": _layer_list("[features.0,features.4]"),
        "max_layers": Rule(Whole(1), meaning="the number of conv layers drawn when layers is null"),
        "max_out": Rule(Whole(1), meaning="the number of output channels (kernels) drawn per layer"),
        "max_in": Rule(Whole(1), meaning="the number of input channels drawn per deeper layer"),
    },
    "feature_maps": {
        **SHOWN_IMAGES,
        "layers": _layer_list("[features.2,features.6]"),
        "max_channels": Rule(Whole(1), meaning="the number of channels drawn per layer"),
        "stats_images": Rule(Whole(1), meaning="the number of test images the active-unit statistics are taken on"),
        "batch_size": Rule(Whole(1), meaning="the number of images per forward pass"),
    },
    "cam": {
        **SHOWN_IMAGES,
        "method": Rule(OneOf(CAM_METHODS),
                       hint="gradcam works for every conv network; cam needs global average pooling and one linear "
                            "layer at the end (ResNets, GoogLeNet); gradcampp is Grad-CAM++."),
        "layer": Rule(Text(optional=True), hint="A layer name as cnnlab summary prints it; null takes the last conv "
                                                "stage (the map the network averages, for cam)."),
        "top": Rule(Whole(1), meaning="the number of top predictions whose maps are drawn per image"),
        "one_class": Rule(Satisfies(lambda v: v is None or isinstance(v, str)
                                    or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
                                    "a class name, a class index, or null"),
                          hint="null takes the true class of the first image shown."),
        "one_class_images": Rule(Whole(0), meaning="the number of test images of the one-class view",
                                 hint="0 leaves that view out."),
        "alpha": Rule(Number(0, 1), meaning="the opacity of the map drawn over the image"),
        "batch_size": Rule(Whole(1), meaning="the number of images per forward and backward pass"),
    },
    "adversarial": ADVERSARIAL_ANALYSIS,
    "fooling": FOOLING_ANALYSIS,
}
