"""Stochastic diagonal Levenberg-Marquardt (LeCun et al. 1998, Section II.C and Appendix C; the "diagonal
approximation of Newton's method" of LeCun's 1989 papers): gradient descent in which every weight has its own step
size, ``lr / (mu + h_kk)``, with ``h_kk`` the weight's entry of the Gauss-Newton approximation of the Hessian's
diagonal, re-estimated on a few hundred training patterns before each pass.

torch has no such optimizer. The papers compute ``h_kk`` by back-propagating second derivatives with squared
weights (which drops the cross terms); here it is the exact Gauss-Newton diagonal ``mean_n sum_o c_o (d y_o / d
w_k)^2`` — ``c_o`` the loss's second derivative in output ``o`` — from per-pattern Jacobians (``torch.func``:
one vectorised reverse pass per output unit). Shared weights get the sum over all the connections that use them,
so a kernel used at 64 places steps about 64 times more carefully than a weight used once: the point of the
method for the papers' shared-weight networks, which plain SGD with one rate for all weights lacks.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap


class DiagonalLevenbergMarquardt(torch.optim.Optimizer):
    """``w_k -= lr / (mu + h_kk) * dE/dw_k``; ``h_kk`` is set by ``estimate_curvature`` (zero before: plain
    gradient descent at ``lr / mu``). ``mu`` keeps the step bounded where the curvature is tiny (the paper's
    LeNet-5 uses 0.02). ``samples`` is how many training patterns each estimate uses (the paper: 500)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 5e-4, mu: float = 0.02, samples: int = 500,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "mu": mu, "weight_decay": weight_decay})
        self.samples = samples

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                curvature = self.state[p].get("curvature")
                if curvature is None:
                    p.add_(grad, alpha=-group["lr"] / group["mu"])
                else:
                    p.addcdiv_(grad, curvature + group["mu"], value=-group["lr"])
        return loss

    @torch.no_grad()
    def estimate_curvature(self, model: nn.Module, images: Tensor, output_curvature: Callable[[Tensor], Tensor],
                           chunk: int = 100) -> None:
        """Set every parameter's ``h_kk`` from ``images`` (a sample of training patterns, normalised as the network
        sees them). ``output_curvature(outputs)`` gives the loss's second derivative in each output, (N, C)."""
        named = {name: p for name, p in model.named_parameters() if p.requires_grad}
        wanted = {id(p) for group in self.param_groups for p in group["params"]}
        params = {name: p.detach() for name, p in named.items() if id(p) in wanted}
        frozen = {name: p.detach() for name, p in model.named_parameters() if name not in params}
        buffers = dict(model.named_buffers())
        training = model.training
        model.eval()  # one network for every pattern: no dropout masks, batch norm on its running statistics

        def outputs(weights: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(model, ({**weights, **frozen}, buffers), (x[None],))[0]

        totals = {name: torch.zeros_like(p) for name, p in params.items()}
        try:
            for start in range(0, len(images), chunk):
                x = images[start:start + chunk]
                y = vmap(outputs, in_dims=(None, 0))(params, x)
                c = output_curvature(y)  # (n, C)
                jacobians = vmap(jacrev(outputs), in_dims=(None, 0))(params, x)  # name -> (n, C, *shape)
                for name, j in jacobians.items():
                    weight = c.reshape(*c.shape, *([1] * (j.dim() - 2)))
                    totals[name] += (j.square() * weight).sum((0, 1))
        finally:
            model.train(training)
        for name, p in params.items():
            self.state[named[name]]["curvature"] = totals[name] / len(images)


def output_curvature(loss: str, num_classes: int, targets: object = None,
                     rubbish_penalty: float = 0.1) -> Callable[[Tensor], Tensor]:
    """The diagonal of the loss's Hessian in the network's outputs (what Gauss-Newton keeps of it): ``2 / C`` for
    the mean squared error to targets; ``p (1 - p)`` of the softmax for cross-entropy and softmax-MSE (the
    diagonal of the softmax's Gauss-Newton term)."""
    if loss == "mse" and targets is not None:
        return lambda y: torch.full_like(y, 2.0 / num_classes)

    def softmax_curvature(y: Tensor) -> Tensor:
        if loss == "map":  # the softmax over the scores and the rubbish class's -j; the latter has no weights
            y = torch.cat([y, y.new_full((len(y), 1), -rubbish_penalty)], dim=1)
            p = y.softmax(1)[:, :-1]
        else:
            p = y.softmax(1)
        return p * (1 - p)

    return softmax_curvature
