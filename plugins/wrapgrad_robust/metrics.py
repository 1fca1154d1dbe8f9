"""Accuracy metrics for robust models, in the model form ``metric(model, inputs, target,
explain) -> Tensor[B]`` (one score per sample, so the pipeline reports them with confidence
intervals and paired tests like any other metric):

* :class:`NaturalAccuracy` (FAR's NA): 1 where the model classifies the clean input as
  ``target``, else 0;
* :class:`PGDAccuracy` (FAR's AA, Table 2: PGD, 40 steps, relative step size 0.03, 3
  restarts): 1 where the model classifies the clean input *and* every PGD iterate's end point
  (one per restart) as ``target``, else 0: the worst case over the points tried,

  .. math:: \\mathrm{AA}_i = \\min\\big(\\mathbb 1[f(x_i) = y_i],\\,
            \\min_{r} \\mathbb 1[f(\\tilde x_i^{(r)}) = y_i]\\big),\\qquad
            \\tilde x^{(r)} = \\mathrm{PGD}_{\\varepsilon}\\big(\\ell(\\cdot, y)\\big)

  with Madry et al.'s ascent on the cross-entropy ``ℓ`` inside the l_inf (or l2) ball
  (:func:`wrapgrad.adversarial.pgd`; restart 0 starts at a uniform point of the ball as Madry's,
  the others too, each from its own draw of one generator seeded with ``seed``).

Both ignore ``explain`` and call the model as it is (the pipeline's models are in evaluation
mode): no parameter, buffer, flag or ``.grad`` changes, and no global random state is used.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from wrapgrad.adversarial import attack_options, check_attack, pgd
from wrapgrad.checks import check_positive_int

__all__ = ["NaturalAccuracy", "PGDAccuracy"]


def _correct(model: Any, x: Tensor, target: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1) == target


def _target(target: Any, x: Tensor) -> Tensor:
    t = torch.as_tensor(target, device=x.device).reshape(-1)
    if t.numel() == 1 and x.shape[0] > 1:
        t = t.expand(x.shape[0])
    return t.long()


def _step(epsilon: float, steps: int) -> float:
    """The default PGD step: FAR Table 2's relative step 0.03 (``0.03 * epsilon``)."""
    return 0.03 * epsilon


class NaturalAccuracy:
    """Per-sample top-1 correctness on the clean inputs (FAR's NA); mean = accuracy."""

    higher_is_better = True

    def __call__(self, model: Any, inputs: Tensor, target: Any, explain: Any = None) -> Tensor:
        return _correct(model, inputs, _target(target, inputs)).to(torch.float64)


class PGDAccuracy:
    """Per-sample correctness under a PGD attack on the cross-entropy (FAR's AA; module
    docstring).

    Args:
        epsilon: the ball's radius ε (FAR Table 2: 0.3 on MNIST; the embedded scale uses 0.2).
        steps: PGD iterations (FAR Table 2: 40).
        step_size: the step η; default ``0.03 * epsilon`` (FAR Table 2's relative step 0.03).
        restarts: independent random starts; a sample counts as robust only if it survives all
            (FAR Table 2: 3).
        random_start: start at a uniform point of the ball (Madry et al.); False: restart 0
            starts at ``x`` (the others still draw).
        norm: ``"linf"`` or ``"l2"``.
        bounds: the data range ``(low, high)`` to clip to, e.g. ``(0.0, 1.0)``; None: none.
        seed: seeds the random starts.
    """

    higher_is_better = True

    def __init__(
        self,
        epsilon: float = 0.3,
        *,
        steps: int = 40,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        norm: str = "linf",
        bounds: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        # the attack's options as attributes: epsilon, step_size, steps, norm, bounds, random_start
        vars(self).update(
            check_attack(epsilon, step_size, steps, random_start, norm, bounds, default_step=_step)
        )
        self.restarts = check_positive_int(restarts, "restarts")
        self.seed = int(seed)

    def __call__(self, model: Any, inputs: Tensor, target: Any, explain: Any = None) -> Tensor:
        x = inputs.detach()
        y = _target(target, x)
        robust = _correct(model, x, y)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)

        def loss(z: Tensor) -> Tensor:
            return F.cross_entropy(model(z), y, reduction="none")

        for r in range(self.restarts):
            start = self.random_start or r > 0
            x_adv = pgd(loss, x, **attack_options(self, random_start=start, generator=generator))
            robust &= _correct(model, x_adv, y)
        return robust.to(torch.float64)

    def __repr__(self) -> str:
        return (
            f"PGDAccuracy(epsilon={self.epsilon}, steps={self.steps}, step_size={self.step_size}, "
            f"restarts={self.restarts}, norm={self.norm!r}, bounds={self.bounds})"
        )
