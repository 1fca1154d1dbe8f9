"""What the conformance checks run components on: a tiny model, a small batch and a plain
gradient explainer, all seeded, so a check takes milliseconds and gives the same verdict on
every run.

The model is a ReLU CNN on ``1x8x8`` images with three classes, with a convolution (the layer
that layer methods explain, ``"features.0"``) and a hidden linear layer (``"head.0"``, the
layer of neuron methods). It counts its forward calls and can be told to raise in the middle
of a call (:meth:`ProbeModel.failing`), which is how the checks see what a component leaves
behind when the model raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from wrapgrad.records import ExplainerTraits

__all__ = [
    "BATCH",
    "CLASSES",
    "INPUT_SHAPE",
    "LAYER",
    "NEURON",
    "NEURON_LAYER",
    "Probe",
    "ProbeError",
    "ProbeModel",
    "gradient_explainer",
    "make_probe",
]

#: The probe batch: 3 images of 1x8x8 in [0, 1] (64 features), 3 classes.
BATCH = 3
INPUT_SHAPE = (1, 8, 8)
CLASSES = 3
#: The layer layer-family explainers explain (a convolution: its output is ``(B, 3, 8, 8)``).
LAYER = "features.0"
#: The layer of neuron-family explainers (a linear layer: its output is ``(B, 8)``) and the
#: neuron they explain.
NEURON_LAYER = "head.0"
NEURON = (1,)


class ProbeError(RuntimeError):
    """What :class:`ProbeModel` raises when told to fail."""


class ProbeModel(nn.Module):
    """A seeded ReLU CNN, ``(B, 1, 8, 8) -> (B, 3)``, that counts its forward calls.

    Args:
        seed: seeds the weights (standard normal, scaled by 0.5).
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # the layers' own initialisation draws globally
            self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.head = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, CLASSES))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        # Plain attributes, not tensors: the model-unchanged checks do not see them.
        self.calls = 0
        self.fail_at: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        h = self.features(x)
        if self.fail_at is not None and self.calls >= self.fail_at:
            # Raised after the first layer ran: hooks a method registered have fired.
            raise ProbeError(f"probe model told to fail at forward call {self.fail_at}")
        return self.head(self.pool(h).flatten(1))

    @contextlib.contextmanager
    def failing(self, at: int) -> Iterator[ProbeModel]:
        """Raise :class:`ProbeError` from forward call number ``at`` (1-based) on, in the
        block."""
        self.calls, self.fail_at = 0, max(int(at), 1)
        try:
            yield self
        finally:
            self.fail_at = None


@attrs.frozen(kw_only=True)
class Probe:
    """One probe case: a model, a batch, its targets and the conventional call arguments."""

    model: ProbeModel
    inputs: Tensor
    """``(3, 1, 8, 8)`` in [0, 1]."""
    target: Tensor
    """``(3,)``: the classes 0, 1, 2."""
    labels: Tensor
    """The model's own predictions on :attr:`inputs` (a data set it is 100 % right on)."""
    mask: Tensor
    """A boolean ``(3, 1, 8, 8)`` ground-truth mask (the upper-left quadrant)."""
    feature_mask: Tensor
    """``(1, 1, 8, 8)`` int64: four features, the four 4x4 quadrants (perturbation methods)."""
    baselines: Tensor
    """``(3, 1, 8, 8)``: one random baseline per sample, in [0, 0.5]."""
    references: Tensor
    """``(4, 1, 8, 8)``: a baseline distribution (reference inputs in [0, 0.5], not paired with
    the samples), the same for every call: the ``baselines`` of explainers whose traits say
    ``baseline_distribution``."""
    mosaics: Tensor
    """``(3, 1, 16, 16)``: one 2x2 mosaic per sample (the ``"mosaic"`` metric form): the
    sample's image on the two tiles :attr:`positions` flags, two other probe images on the
    others."""
    positions: Tensor
    """``(3, 4)`` int64: 1 where a mosaic's tile (top left, top right, bottom left, bottom
    right) shows the sample's own image, the target class of the mosaic."""

    def rows(self, index: slice | int) -> Probe:
        """The probe restricted to some rows of the batch."""
        sel = slice(index, index + 1) if isinstance(index, int) else index
        return attrs.evolve(
            self,
            inputs=self.inputs[sel],
            target=self.target[sel],
            labels=self.labels[sel],
            mask=self.mask[sel],
            baselines=self.baselines[sel],
            mosaics=self.mosaics[sel],
            positions=self.positions[sel],
        )


def make_probe(seed: int = 0) -> Probe:
    """The probe case (a fresh model each call; ``seed`` seeds model and inputs)."""
    model = ProbeModel(seed).eval()
    g = torch.Generator().manual_seed(1000 + seed)
    inputs = torch.rand((BATCH, *INPUT_SHAPE), generator=g)
    with torch.no_grad():
        labels = model(inputs).argmax(dim=1)
    model.calls = 0
    mask = torch.zeros((BATCH, *INPUT_SHAPE), dtype=torch.bool)
    mask[..., :4, :4] = True
    quadrant = torch.arange(4).reshape(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)
    baselines = 0.5 * torch.rand((BATCH, *INPUT_SHAPE), generator=g)
    mosaics, positions = _mosaics(inputs)
    return Probe(
        model=model,
        inputs=inputs,
        target=torch.arange(BATCH) % CLASSES,
        labels=labels,
        mask=mask,
        feature_mask=quadrant.reshape(1, *INPUT_SHAPE),
        baselines=baselines,
        references=0.5 * torch.rand((4, *INPUT_SHAPE), generator=g),
        mosaics=mosaics,
        positions=positions,
    )


#: Which tiles of sample ``i``'s mosaic show its own image (top left, top right, bottom left,
#: bottom right), by ``i % 3``.
_TILES = ((1, 0, 0, 1), (0, 1, 1, 0), (1, 1, 0, 0))


def _mosaics(inputs: Tensor) -> tuple[Tensor, Tensor]:
    """One 2x2 mosaic per sample: its image on the tiles of :data:`_TILES`, the next two
    images of the batch (cyclically) on the others, as Quantus' ``mosaic_creation`` lays
    out two target-class and two other-class images."""
    n = inputs.shape[0]
    mosaics, positions = [], []
    for i in range(n):
        flags = _TILES[i % len(_TILES)]
        others = iter([inputs[(i + 1) % n], inputs[(i + 2) % n]])
        tiles = [inputs[i] if own else next(others) for own in flags]
        top, bottom = torch.cat(tiles[:2], dim=-1), torch.cat(tiles[2:], dim=-1)
        mosaics.append(torch.cat([top, bottom], dim=-2))
        positions.append(torch.tensor(flags))
    return torch.stack(mosaics), torch.stack(positions)


def _gradient(
    model: Any, inputs: Tensor, target: Any = None, *, create_graph: bool = False, **_: Any
) -> Tensor:
    """∂f_target/∂x: the gradient of each sample's target logit with respect to its input."""
    x = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        if target is not None:
            index = torch.as_tensor(target, device=out.device).reshape(-1, 1)
            out = out.gather(1, index.expand(out.shape[0], 1))
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
    return grad


class _GradientExplainer:
    """The kit's base explainer: the plain input gradient of the target logit."""

    traits = ExplainerTraits(
        name="probe_gradient", requires_grad_inputs=True, vmap_layout="block", differentiable=True
    )
    name = "probe_gradient"

    def __call__(self, model: Any, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
        return _gradient(model, inputs, target, **kwargs)

    def __repr__(self) -> str:
        return "probe_gradient"


#: The explainer enhancers, model-based metrics and attacks are checked with.
gradient_explainer = _GradientExplainer()
