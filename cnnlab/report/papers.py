"""The papers of the lectures as data: their published figures, the recipe that reproduces each row, and what is
faithful and what differs. ``cnnlab report`` sets cnnlab's numbers beside these; nothing here is measured.

Each paper has

- ``networks``: the architecture counts it publishes (parameters, connections, units), each with the recipe (and
  overrides) whose network ``counts`` builds to count the same thing live;
- ``rows``: its published test figures, one per network and training, with the recipe that reproduces it and the
  number of seeds to average;
- ``metrics``: the ``results.json`` keys that hold cnnlab's figure (accuracies in [0, 1]) and the size of the test
  set behind each, which the verdict's noise estimate needs;
- ``claims``: the orderings the paper argues for (deeper ResNets are better, ...), checked on cnnlab's means;
- ``footnote``: what is faithful, what differs, and what the verdict marks mean for this paper.

Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Count:
    """One published architecture count: ``measure`` is what ``counts.measure`` computes (``parameters``,
    ``free_parameters``, ``connections`` or ``units``); ``published`` is the figure as printed (``"2,570"``,
    ``"0.27M"``), whose precision decides what counts as a match."""

    label: str
    measure: str
    published: str


@dataclass(frozen=True)
class Network:
    """A network whose counts the paper publishes, and the recipe that builds it."""

    name: str
    recipe: str
    counts: tuple[Count, ...]
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    """One published test figure (a percentage: accuracy or error, as the paper reports it; None when the paper
    gives none) and the recipe, with ``overrides``, that reproduces it over ``seeds`` seeds."""

    network: str
    recipe: str
    paper: float | None
    training: str = "faithful"  # the variant: faithful or modern training, residual or plain network
    overrides: tuple[str, ...] = ()
    seeds: int = 1

    @property
    def key(self) -> str:
        """The row's identity in claims and in ``runs.csv``: the recipe and its overrides."""
        return " ".join([self.recipe, *self.overrides])


@dataclass(frozen=True)
class Metric:
    """A ``results.json`` accuracy and the number of test images behind it."""

    key: str
    label: str
    test_images: int


@dataclass(frozen=True)
class Claim:
    """An ordering the paper argues for: the rows ``increasing`` in accuracy (keys of ``Row.key``)."""

    text: str
    increasing: tuple[str, ...]


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    reference: str
    error: bool  # the paper reports error rates (True) or accuracies (False); the tables follow it
    decimals: int  # as many as the paper prints
    metrics: tuple[Metric, ...]  # the first one with a value decides the verdict; the others are shown beside it
    networks: tuple[Network, ...]
    rows: tuple[Row, ...]
    footnote: str
    claims: tuple[Claim, ...] = field(default_factory=tuple)
    test_images: int = 10_000  # behind the paper's own figures: their sampling error is part of the noise

    @property
    def unit(self) -> str:
        return "error %" if self.error else "accuracy %"

    def recipes(self) -> list[str]:
        return list(dict.fromkeys(r.recipe for r in self.rows))


def _links_and_weights(links: str, weights: str) -> tuple[Count, ...]:
    return (Count("links", "connections", links), Count("free weights", "free_parameters", weights))


# --- LeCun (1989), "Generalization and Network Design Strategies" ---------------------------------------------

_NETS = (("Net-1", "2,570", "2,570", 80.0), ("Net-2", "3,214", "3,214", 87.0), ("Net-3", "1,226", "1,226", 88.5),
         ("Net-4", "2,266", "1,132", 94.0), ("Net-5", "5,194", "1,060", 98.4))
NET_SEEDS = 5  # 160 test images give a ±2.5-point standard error: the ordering needs several seeds

LECUN_1989 = Paper(
    key="lecun1989",
    title="LeCun 1989, Generalization and Network Design Strategies: Net-1 … Net-5",
    reference="Y. LeCun, \"Generalization and Network Design Strategies\", in Connectionism in Perspective, 1989",
    error=False,
    decimals=1,
    metrics=(Metric("test_full/acc", "MNIST test, 10,000 images", 10_000),
             Metric("test/acc", "160 test images", 160)),
    test_images=160,
    networks=tuple(Network(name, f"lecun1989_net{i}", _links_and_weights(links, weights))
                   for i, (name, links, weights, _) in enumerate(_NETS, start=1)),
    rows=tuple(Row(name, f"lecun1989_net{i}{suffix}", accuracy, training, seeds=NET_SEEDS)
               for suffix, training in (("", "faithful"), ("_modern", "modern"))
               for i, (name, _, _, accuracy) in enumerate(_NETS, start=1)),
    claims=tuple(Claim(f"Net-1 < Net-2 < Net-3 < Net-4 < Net-5 ({training} training)",
                       tuple(f"lecun1989_net{i}{suffix}" for i in range(1, 6)))
                 for suffix, training in (("", "faithful"), ("_modern", "modern"))),
    footnote=(
        "Faithful: the five architectures (links and free weights counted live above), 16×16 inputs, 32 training "
        "and 16 test images per class (320 / 160, the paper's split of its 480 digits), scaled-tanh units and "
        "outputs, mean-squared error to ±1 targets, per-pattern gradient steps and the paper's initialisation (the "
        "recipes' YAML headers give what had to be guessed). Differs: MNIST digits (many writers) stand in for the "
        "paper's, drawn by one writer. The paper's figures are on 160 test images (±2.5 to ±3.2 points of sampling "
        "error), so cnnlab also tests every run on MNIST's full 10,000-image test set at 16×16, and the verdict "
        "uses that figure when the runs have it. 'modern' rows: the same networks trained with softmax "
        "cross-entropy and AdamW with a cosine schedule on mini-batches."),
)

# --- LeCun et al. (1989), "Backpropagation Applied to Handwritten Zip Code Recognition" -----------------------

ZIPCODE = Paper(
    key="lecun1989_zipcode",
    title="LeCun et al. 1989, Backpropagation Applied to Handwritten Zip Code Recognition",
    reference="Y. LeCun, B. Boser, J. S. Denker et al., Neural Computation 1(4), 1989",
    error=True,
    decimals=2,
    metrics=(Metric("test/acc", "2,007 test images", 2_007),),
    test_images=2_007,
    networks=(Network("zip-code net", "lecun1989_zipcode", (
        Count("units", "units", "1,256"), Count("connections", "connections", "64,660"),
        Count("free parameters", "free_parameters", "9,760"))),),
    # three seeds: one standard error on 2,007 test digits is ±0.44 points, as large as the gaps the goals name
    rows=(Row("zip-code net", "lecun1989_zipcode", 5.00, seeds=3),
          Row("zip-code net", "lecun1989_zipcode_modern", 5.00, "modern", seeds=3)),
    footnote=(
        "Faithful: the network (H1 12 maps 8×8, 5×5 kernels at stride 2, a bias per unit; H2 12 maps 4×4, each "
        "reading 8 of H1's maps; H3 30 units; 10 outputs: units, connections and free parameters counted live "
        "above), 7,291 training and 2,007 test digits at 16×16, mean-squared error to ±1 targets, per-pattern "
        "updates, 23 passes. Differs: MNIST digits stand in for the US Postal Service's, as in "
        "karpathy/lecun1989-repro (4.09 % error: the goal for the faithful row), whose choices the row follows "
        "where the paper is silent or measured worse here: which 8 H1 maps each H2 map reads, his initialisation, "
        "plain per-pattern SGD instead of the paper's diagonal Newton steps, and plain tanh units instead of the "
        "paper's scaled tanh (5.03 % with it; the recipe's YAML header says why). The 'modern' row trains the same network, same parameter count, with "
        "ReLU, cross-entropy, AdamW, dropout and one-pixel shifts; goal: half the faithful row's error."),
)

# --- LeCun, Bottou, Bengio, Haffner (1998), LeNet-5 --------------------------------------------------------------

LENET5 = Paper(
    key="lenet5",
    title="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition: LeNet-5",
    reference="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, Proc. IEEE 86(11), 1998",
    error=True,
    decimals=2,
    metrics=(Metric("test/acc", "MNIST test, 10,000 images", 10_000),),
    networks=(Network("LeNet-5", "lenet5_classic_mnist", (
        Count("trainable parameters", "free_parameters", "60,000"),
        Count("connections", "connections", "340,908"))),),
    rows=(Row("LeNet-5", "lenet5_classic_mnist", 0.95, seeds=2),
          Row("LeNet-5, distortions", "lenet5_classic_mnist_distortions", 0.80, seeds=2)),
    claims=(Claim("the paper's distortions lower the error",
                  ("lenet5_classic_mnist", "lenet5_classic_mnist_distortions")),),
    footnote=(
        "Faithful: the classic network (scaled tanh, trainable subsampling, the C3 connection table, RBF outputs: "
        "trainable parameters and connections counted live above; the RBF centres are fixed, as in the paper), "
        "MNIST padded to 32×32 with the paper's input levels, 20 passes with the shape of the paper's step "
        "schedule; the second row adds the paper's affine distortions (translation, scaling, squeezing, shearing) "
        "through cnnlab's augmentation; the paper's MAP criterion for the RBF penalties (loss=map). Differs: Adam on "
        "mini-batches replaces per-pattern stochastic diagonal Levenberg-Marquardt, and the RBF centres are fixed "
        "random ±1 codes rather than the paper's 7×12 bitmaps (the recipes' YAML headers give the details)."),
)

# --- He, Zhang, Ren, Sun (2016), CIFAR-10: plain against residual ---------------------------------------------

_RESNET_DEPTHS = ((20, "0.27M", 8.75), (32, "0.46M", 7.51), (44, "0.66M", 7.17), (56, "0.85M", 6.97),
                  (110, "1.7M", 6.43))
_PLAIN_DEPTHS = (20, 32, 44, 56)  # the depths of the paper's Fig. 6 (left)


def _depth(depth: int) -> tuple[str, ...]:
    return () if depth == 20 else (f"model.depth={depth}",)  # the recipes are the 20-layer networks


def _row_key(recipe: str, depth: int) -> str:
    return " ".join([recipe, *_depth(depth)])


HE_2016 = Paper(
    key="he2016",
    title="He et al. 2016, Deep Residual Learning: CIFAR-10, plain against residual",
    reference="K. He, X. Zhang, S. Ren, J. Sun, CVPR 2016, Table 6 and Fig. 6",
    error=True,
    decimals=2,
    metrics=(Metric("test/acc", "CIFAR-10 test, 10,000 images", 10_000),),
    networks=tuple(Network(f"ResNet-{d}", "resnet20_cifar10", (Count("parameters", "parameters", params),),
                           _depth(d)) for d, params, _ in _RESNET_DEPTHS),
    rows=(*(Row(f"{d} layers", "resnet20_cifar10", error, "residual", _depth(d)) for d, _, error in _RESNET_DEPTHS),
          *(Row(f"{d} layers", "plain20_cifar10", None, "plain", _depth(d)) for d in _PLAIN_DEPTHS)),
    claims=(Claim("deeper ResNets are better (20 → 110)",
                  tuple(_row_key("resnet20_cifar10", d) for d, _, _ in _RESNET_DEPTHS)),
            Claim("deeper plain nets are worse (degradation, 20 → 56)",
                  tuple(_row_key("plain20_cifar10", d) for d in reversed(_PLAIN_DEPTHS)))),
    footnote=(
        "Faithful: the networks (6n+2 layers, option-A shortcuts; parameters counted live), SGD at 0.1 with momentum "
        "0.9 and weight decay 1e-4, batch 128, the rate divided by 10 at 32k and 48k of 64k iterations, 4-pixel "
        "padding, random crops and flips. Differs: cnnlab holds out 10 % of the training set for validation (the "
        "paper trains on 45k/5k for its plots, on all 50k for its table). The paper tabulates no plain-net errors "
        "(its Fig. 6 plots them): those rows check the degradation claim only."),
)

PAPERS: tuple[Paper, ...] = (LECUN_1989, ZIPCODE, LENET5, HE_2016)
