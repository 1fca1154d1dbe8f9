"""Built-in plugin: the state perturbers of neural SDEs (Jha et al. 2022).

``brownian`` (constant Σ) and ``attribution_shaped`` (``Σ · |Â(x)|``, the model's own normalised
attribution map carried to each block), contributed as ``PerturberSpec(target="state")`` and
used by :func:`wrapgrad.to_sde` by name. Registered through the ``wrapgrad`` entry-point group
like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import PerturberSpec
from wrapgrad_sde.perturbers import AttributionShaped, Brownian


@hookimpl
def wrapgrad_perturbers() -> Iterator[PerturberSpec]:
    yield PerturberSpec(
        name="brownian",
        factory=Brownian,
        target="state",
        summary="Neural-SDE block noise Sigma * sqrt(dt) * xi, Sigma constant (Brownian motion).",
    )
    yield PerturberSpec(
        name="attribution_shaped",
        factory=AttributionShaped,
        target="state",
        summary="Neural-SDE block noise shaped by the model's attributions: Sigma * |A_hat| pooled to the block.",
    )
