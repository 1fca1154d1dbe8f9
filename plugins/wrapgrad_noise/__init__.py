"""Built-in plugin: SmoothGrad, NoiseGrad, FusionGrad and VarGrad, and their noise sources.

Perturbers: ``input_gaussian`` (x + ξ, σ relative to each sample's range, Bykov et al. 2022
Eq. 4) and ``weight_multiplicative`` (W ⊙ η, η ~ N(1, σ²)). Enhancers: ``smoothgrad``,
``noisegrad``, ``fusiongrad``, ``vargrad``, all on the batched engine of :mod:`wrapgrad.engine`.
Registered through the ``wrapgrad`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapgrad import hookimpl
from wrapgrad.records import EnhancerSpec, PerturberSpec
from wrapgrad_noise.perturbers import InputGaussian, WeightMultiplicative


@hookimpl
def wrapgrad_perturbers() -> list[PerturberSpec]:
    return PerturberSpec.from_rows("name factory target summary", (
        ("input_gaussian", InputGaussian, "input",
         "Gaussian input noise, sigma = noise_level * (max(x) - min(x)) per sample or absolute "
         "input_sigma."),
        ("weight_multiplicative", WeightMultiplicative, "weight",
         "Multiplicative weight noise W * eta, eta ~ N(1, sigma^2), on selected parameters."),
    ))  # fmt: skip


@hookimpl
def wrapgrad_enhancers() -> Iterator[EnhancerSpec]:
    # Imported here, not at module import: the enhancers pull in the engine (torch.func).
    from wrapgrad_noise import enhancers

    yield from enhancers.specs()
