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
def wrapgrad_perturbers() -> Iterator[PerturberSpec]:
    yield PerturberSpec(
        name="input_gaussian",
        factory=InputGaussian,
        target="input",
        summary="Gaussian input noise, sigma = noise_level * (max(x) - min(x)) per sample or absolute input_sigma.",
    )
    yield PerturberSpec(
        name="weight_multiplicative",
        factory=WeightMultiplicative,
        target="weight",
        summary="Multiplicative weight noise W * eta, eta ~ N(1, sigma^2), on selected parameters.",
    )


@hookimpl
def wrapgrad_enhancers() -> Iterator[EnhancerSpec]:
    # Imported here, not at module import: the enhancers pull in the engine (torch.func).
    from wrapgrad_noise import enhancers

    yield from enhancers.specs()
