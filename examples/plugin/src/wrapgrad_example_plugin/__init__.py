"""An example third-party wrapgrad plugin (see its README).

Everything wrapgrad needs is the entry point in ``pyproject.toml`` and the hook functions below;
the components live in small modules of their own. After ``pip install`` they are available as
``wrapgrad.wrap(model, method, enhancer="laplace_smoothgrad")``,
``wrapgrad.metric("relevance_mass")``, ``wrapgrad.load_dataset("bars")`` and
``wrapgrad.wrap(model, "gradient_x_sign")``.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import (
    DatasetSpec,
    EnhancerSpec,
    ExplainerSpec,
    MetricSpec,
    PerturberSpec,
)
from wrapgrad_example_plugin.data import load_bars
from wrapgrad_example_plugin.enhancers import LaplaceInput, LaplaceSmoothGrad
from wrapgrad_example_plugin.explainers import GradientXSign
from wrapgrad_example_plugin.metrics import CosineSimilarity, RelevanceMass

__all__ = [
    "WRAPGRAD_HOOK_API",
    "CosineSimilarity",
    "GradientXSign",
    "LaplaceInput",
    "LaplaceSmoothGrad",
    "RelevanceMass",
    "load_bars",
    "specs",
]

__version__ = "0.2.0"

#: The wrapgrad hook API this plugin was written for (see wrapgrad.hookspecs.HOOK_API).
WRAPGRAD_HOOK_API = "1.0"


@hookimpl
def wrapgrad_enhancers() -> Iterator[EnhancerSpec]:
    yield EnhancerSpec(
        name="laplace_smoothgrad",
        factory=LaplaceSmoothGrad,
        summary="SmoothGrad with Laplace input noise of std alpha * (max x - min x).",
        levels={"noise_level": "input"},
        smoke={"n_samples": 2},
    )


@hookimpl
def wrapgrad_perturbers() -> Iterator[PerturberSpec]:
    yield PerturberSpec(
        name="input_laplace",
        factory=LaplaceInput,
        target="input",
        summary="Laplace input noise x + xi, std alpha * (max x - min x) per sample.",
    )


@hookimpl
def wrapgrad_metrics() -> Iterator[MetricSpec]:
    yield MetricSpec(
        name="cosine_similarity",
        factory=CosineSimilarity,
        summary="Cosine similarity of two attribution maps, per sample.",
        requires="maps",
        higher_is_better=True,
    )
    yield MetricSpec(
        name="relevance_mass",
        factory=RelevanceMass,
        summary="Share of positive relevance inside the ground-truth mask (Arras et al. 2022).",
        requires="mask",
        higher_is_better=True,
    )


@hookimpl
def wrapgrad_datasets() -> Iterator[DatasetSpec]:
    yield DatasetSpec(
        name="bars",
        factory=load_bars,
        summary="1x8x8 images of a horizontal (0) or vertical (1) bar on noise, with its mask.",
        num_classes=2,
        input_shape=(1, 8, 8),
        has_masks=True,
        masks=("bar",),
        smoke={"n": 64},
    )


@hookimpl
def wrapgrad_explainers() -> Iterator[ExplainerSpec]:
    yield ExplainerSpec(
        name="gradient_x_sign",
        factory=GradientXSign,
        summary="Gradient times the sign of the input (Gu, Yang & Tresp 2018).",
        traits=GradientXSign.traits,
    )


def specs() -> list[object]:
    """Every spec this plugin contributes (what its conformance test checks)."""
    return [
        *wrapgrad_enhancers(),
        *wrapgrad_perturbers(),
        *wrapgrad_metrics(),
        *wrapgrad_datasets(),
        *wrapgrad_explainers(),
    ]
