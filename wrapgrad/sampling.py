"""Pure sampling and reduction kernels of the Monte-Carlo engine.

Everything here is a function of tensors and a :class:`torch.Generator` passed in: no module
state, no global random numbers. The perturbers of the ``noise`` plugin and the engine in
:mod:`wrapgrad.engine` are thin layers over these kernels.

References:
    Bykov et al. (2022), *NoiseGrad — Enhancing Explanations by Introducing Stochasticity to
    Model Weights*, AAAI: Eq. 1 (NoiseGrad), Eq. 2 (FusionGrad), Eq. 4 (SmoothGrad noise level).
    Smilkov et al. (2017), *SmoothGrad: removing noise by adding noise*.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from wrapgrad.checks import check_nonnegative, check_positive_int
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = [
    "RunningMoments",
    "check_nonnegative",
    "check_positive_int",
    "derive_seeds",
    "gaussian_input_noise",
    "make_generator",
    "multiplicative_weight_noise",
    "per_sample_sigma",
    "select_parameters",
]


# -- generators -----------------------------------------------------------------------------------
def make_generator(
    device: torch.device | str | None,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Generator:
    """The generator that drives every draw of one Monte-Carlo estimate.

    ``generator`` wins if given (it must live on ``device``); else a new generator on ``device``
    seeded with ``seed``; with neither, the seed is drawn from torch's global RNG, so
    ``torch.manual_seed`` makes results repeatable too.
    """
    device = torch.device(device if device is not None else "cpu")
    if generator is not None:
        if seed is not None:
            raise WrapgradValueError("seed: pass either seed= or generator=, not both")
        if not isinstance(generator, torch.Generator):
            raise WrapgradTypeError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        if generator.device.type != device.type:
            raise WrapgradValueError(
                f"generator: expected a generator on the inputs' device {device}, got one on "
                f"{generator.device}"
            )
        return generator
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise WrapgradTypeError(f"seed: expected an int or None, got {seed!r}")
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) % 2**63)
    return g


def derive_seeds(generator: torch.Generator, shape: Sequence[int]) -> list[Any]:
    """A nested list of independent 62-bit seeds of ``shape``, drawn from ``generator``.

    The engine gives every Monte-Carlo sample its own sub-generator seeded from this table, so a
    sample's draws do not depend on how the samples are chunked or in which order they run.
    """
    t = torch.randint(0, 2**62, tuple(shape), generator=generator, device=generator.device)
    return t.cpu().tolist()


def _sub_generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


# -- input noise ----------------------------------------------------------------------------------
def per_sample_sigma(x: Tensor, noise_level: float) -> Tensor:
    """σ_SG = α_SG · (max(x_b) − min(x_b)) per sample ``b`` (Bykov et al. 2022, Eq. 4).

    Args:
        x: a batch ``(B, ...)``.
        noise_level: α_SG.

    Returns:
        Shape ``(B, 1, ..., 1)`` (broadcasts against ``x``).
    """
    flat = x.detach().reshape(x.shape[0], -1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    return (noise_level * span).reshape(x.shape[0], *([1] * (x.dim() - 1)))


def gaussian_input_noise(
    x: Tensor,
    n: int,
    sigma: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    guide: Tensor | None = None,
) -> Tensor:
    """``n`` noisy copies ``x + ξ``, ξ ~ N(0, σ²) element-wise; shape ``(n, *x.shape)``.

    .. math:: \\tilde x_i = x + \\sigma \\odot g \\odot \\varepsilon_i,\\quad
              \\varepsilon_i \\sim \\mathcal N(0, I)

    ``sigma`` is a float or a tensor broadcasting to ``x`` (e.g. :func:`per_sample_sigma`);
    ``guide`` (optional, broadcasts to ``x``) scales the noise element-wise. ``sigma == 0``
    returns exact copies and draws nothing.
    """
    if isinstance(sigma, (int, float)) and sigma == 0 and guide is None:
        return x.detach().unsqueeze(0).expand(n, *x.shape).clone()
    eps = torch.randn((n, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    scale = sigma if guide is None else sigma * guide
    return x.detach().unsqueeze(0) + eps * scale


# -- weight noise ---------------------------------------------------------------------------------
def multiplicative_weight_noise(
    w: Tensor,
    n: int,
    sigma: float,
    *,
    generator: torch.Generator | None = None,
    guide: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``n`` samples ``W ⊙ η``, η ~ N(1, σ²) element-wise (Bykov et al. 2022, Eq. 1 and below).

    Computed as ``W + σ · W ⊙ ε`` with ε ~ N(0, I) drawn in place (two passes over memory).
    Shape ``(n, *w.shape)``; ``guide`` scales σ element-wise; ``out`` (optional, contiguous,
    that shape) receives the samples; ``sigma == 0`` returns exact copies.
    """
    w = w.detach()
    shape = (n, *w.shape)
    if out is None:
        out = torch.empty(shape, dtype=w.dtype, device=w.device)
    elif tuple(out.shape) != shape:
        raise WrapgradValueError(f"out: expected shape {shape}, got {tuple(out.shape)}")
    if sigma == 0 and guide is None:
        return out.copy_(w.unsqueeze(0).expand(shape))
    out.normal_(generator=generator)
    if guide is not None:
        out.mul_(guide)
    return torch.addcmul(w, w, out, value=sigma, out=out)


def select_parameters(
    model: nn.Module,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    module_types: type | Iterable[type] | None = None,
    argument: str = "include",
) -> list[str]:
    """Qualified names of the floating-point parameters to perturb, in ``named_parameters`` order.

    Args:
        model: the model.
        include: name patterns; a pattern is a glob (``"layer1.*"``, ``"*.weight"``) or, written
            as ``"re:<regex>"``, a regular expression matched against the whole name. None: all.
        exclude: patterns of names to leave unperturbed (applied after ``include``).
        module_types: only parameters owned directly by modules of these types
            (e.g. ``nn.Conv2d``).
        argument: the option name reported in errors.

    Raises:
        WrapgradValueError: a pattern or type that matches no parameter, or an empty selection.
    """

    def patterns(p: str | Iterable[str] | None, name: str) -> list[str]:
        if p is None:
            return []
        out = [p] if isinstance(p, str) else list(p)
        for item in out:
            if not isinstance(item, str):
                raise WrapgradTypeError(
                    f"{name}: expected a name pattern or a list of them, got {item!r}"
                )
        return out

    def matches(pattern: str, name: str) -> bool:
        if pattern.startswith("re:"):
            return re.fullmatch(pattern[3:], name) is not None
        return fnmatch.fnmatchcase(name, pattern)

    owners: dict[str, nn.Module] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p is not None:
                owners.setdefault(f"{mname}.{pname}" if mname else pname, module)
    names = [n for n, p in model.named_parameters() if p.is_floating_point()]
    inc = patterns(include, argument)
    exc = patterns(exclude, "exclude")
    for pat in inc:
        if not any(matches(pat, n) for n in names):
            raise WrapgradValueError(
                f"{argument}: the pattern {pat!r} matches no parameter of "
                f"{type(model).__name__}; its parameters are {names[:8]}"
                f"{' ...' if len(names) > 8 else ''}"
            )
    for pat in exc:
        if not any(matches(pat, n) for n in names):
            raise WrapgradValueError(
                f"exclude: the pattern {pat!r} matches no parameter of {type(model).__name__}"
            )
    chosen = [n for n in names if not inc or any(matches(p, n) for p in inc)]
    chosen = [n for n in chosen if not any(matches(p, n) for p in exc)]
    if module_types is not None:
        types = (module_types,) if isinstance(module_types, type) else tuple(module_types)
        if not types or not all(isinstance(t, type) for t in types):
            raise WrapgradTypeError(
                f"module_types: expected a module class or a list of them, got {module_types!r}"
            )
        chosen = [n for n in chosen if isinstance(owners.get(n), types)]
        if not chosen:
            raise WrapgradValueError(
                f"module_types: no selected parameter belongs to a module of type "
                f"{', '.join(t.__name__ for t in types)}"
            )
    if not chosen:
        raise WrapgradValueError(
            f"{argument}: the selection leaves no parameter of {type(model).__name__} to perturb"
        )
    return chosen


# -- streaming reduction ----------------------------------------------------------------------------
class RunningMoments:
    """Streaming mean, mean of squares and unbiased variance over chunks of samples.

    ``update(chunk)`` takes a chunk of shape ``(c, ...)`` (``c`` samples of one map); chunks are
    merged with Chan et al.'s parallel form of Welford's algorithm, so the memory held is three
    maps, whatever the number of samples:

    .. math::
        n = n_a + n_b,\\quad \\delta = \\bar x_b - \\bar x_a,\\quad
        \\bar x = \\bar x_a + \\delta\\, n_b / n,\\quad
        M_2 = M_{2,a} + M_{2,b} + \\delta^2 n_a n_b / n,\\quad
        s^2 = M_2 / (n - 1).
    """

    def __init__(self, *, track_square: bool = False, track_variance: bool = False) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.sq: Tensor | None = None
        self.track_square = track_square
        self.track_variance = track_variance

    def update(self, chunk: Tensor) -> None:
        chunk = chunk.detach()
        c = int(chunk.shape[0])
        if c == 0:
            return
        mean_b = chunk.mean(dim=0)
        if self.track_square:
            sq_b = (chunk * chunk).mean(dim=0)
        if self.track_variance:
            m2_b = ((chunk - mean_b) ** 2).sum(dim=0)
        if self.mean is None:
            self.count, self.mean = c, mean_b
            if self.track_square:
                self.sq = sq_b
            if self.track_variance:
                self.m2 = m2_b
            return
        n = self.count + c
        delta = mean_b - self.mean
        if self.track_variance:
            assert self.m2 is not None
            self.m2 = self.m2 + m2_b + delta * delta * (self.count * c / n)
        if self.track_square:
            assert self.sq is not None
            self.sq = self.sq + (sq_b - self.sq) * (c / n)
        self.mean = self.mean + delta * (c / n)
        self.count = n

    def result(self, aggregate: str) -> Tensor:
        """``"mean"``, ``"mean_square"`` or ``"variance"`` (unbiased; 0 for one sample)."""
        if self.mean is None:
            raise WrapgradValueError("RunningMoments: no samples were added")
        if aggregate == "mean":
            return self.mean
        if aggregate == "mean_square":
            assert self.sq is not None
            return self.sq
        if aggregate == "variance":
            assert self.m2 is not None
            if self.count < 2:
                return torch.zeros_like(self.m2)
            return self.m2 / (self.count - 1)
        raise WrapgradValueError(
            f"aggregate: expected 'mean', 'mean_square' or 'variance', got {aggregate!r}"
        )
