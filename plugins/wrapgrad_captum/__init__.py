"""Built-in plugin: every attribution class of ``captum.attr`` as a named explainer.

Names are the classes' names in snake case (``Saliency`` -> ``saliency``, ``IntegratedGradients``
-> ``integrated_gradients``, ``LayerGradCam`` -> ``layer_grad_cam``). Registered through the
``wrapgrad`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from wrapgrad import hookimpl
from wrapgrad.captum_adapter import CaptumExplainer, captum_classes, method_traits
from wrapgrad.records import ExplainerSpec


def _factory(cls: type) -> Callable[..., CaptumExplainer]:
    def make(layer: Any = None, interpolate: bool | str = False, **options: Any) -> CaptumExplainer:
        return CaptumExplainer.from_options(
            cls, layer=layer, interpolate=interpolate, options=options
        )

    make.__name__ = f"make_{cls.__name__}"
    make.__doc__ = f"Build a :class:`CaptumExplainer` for ``captum.attr.{cls.__name__}``."
    return make


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    line = " ".join(doc.split())
    return f"captum.attr.{cls.__name__}" + (f": {line[:90]}" if line else "")


#: What a --smoke run keeps of the Captum options that set the amount of work.
_SMOKE = {"n_steps": 4, "n_samples": 4, "nt_samples": 2}

#: What a --smoke run sets for Lime besides (unless the pipeline sets it): a least-squares
#: surrogate (KernelShap's) instead of Captum's default ``SkLearnLasso(alpha=0.01)``. A Lasso
#: zeroes a feature's coefficient unless removing the feature moves the output by more than about
#: ``4 * alpha`` = 0.04 (its soft threshold on the Bernoulli 0/1 features, variance 1/4); the
#: near-chance model of a smoke run (and the conformance kit's probe) moves it less, so the maps
#: came out all zero, at 4 samples or 50 (more samples only make the zeros surer). Least squares
#: keeps every coefficient and costs nothing more; the ``n_samples`` cap stays 4.
_LIME_SMOKE = {"interpretable_model": "linear_model.LinearRegression"}


def _smoke(cls: type, names: frozenset[str]) -> dict[str, Any]:
    """The smoke caps of a Captum class that takes ``names``."""
    caps = {k: v for k, v in _SMOKE.items() if k in names}
    if cls.__name__ == "Lime" and "interpretable_model" in names:
        caps.update(_LIME_SMOKE)
    return caps


@hookimpl
def wrapgrad_explainers() -> Iterator[ExplainerSpec]:
    for name, cls in sorted(captum_classes().items()):
        names, open_ = CaptumExplainer.option_names(cls)
        yield ExplainerSpec(
            name=name,
            factory=_factory(cls),
            summary=_summary(cls),
            traits=method_traits(cls),
            # Declared, not read from the factory's **options: wrap() routes by these names.
            options=None if open_ else (*sorted(names), "layer", "interpolate"),
            smoke=_smoke(cls, names),
        )
