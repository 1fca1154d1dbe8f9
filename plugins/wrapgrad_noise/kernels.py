"""Pure noise kernels of the noise plugin: functions of tensors and a generator passed in.

No module state, no global random numbers; the perturbers in :mod:`wrapgrad_noise.perturbers`
are thin classes over these. The kernels never detach: the engine hands them detached tensors
(and runs them without autograd) unless maps must stay differentiable (``create_graph``), in
which case ``x + ξ`` and ``W ⊙ η`` stay connected to ``x`` and ``W``.

References:
    Bykov et al. (2022), *NoiseGrad — Enhancing Explanations by Introducing Stochasticity to
    Model Weights*, AAAI: Eq. 1 (NoiseGrad), Eq. 2 (FusionGrad), Eq. 4 (SmoothGrad noise level).
    Smilkov et al. (2017), *SmoothGrad: removing noise by adding noise*.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = [
    "gaussian_input_noise",
    "multiplicative_weight_noise",
    "per_sample_sigma",
    "select_parameters",
]


def per_sample_sigma(x: Tensor, noise_level: float) -> Tensor:
    """σ_SG = α_SG · (max(x_b) − min(x_b)) per sample ``b`` (Bykov et al. 2022, Eq. 4).

    Args:
        x: a batch ``(B, ...)``.
        noise_level: α_SG.

    Returns:
        Shape ``(B, 1, ..., 1)`` (broadcasts against ``x``).
    """
    flat = x.reshape(x.shape[0], -1)
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
        return x.unsqueeze(0).expand(n, *x.shape).clone()
    eps = torch.randn((n, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    scale = sigma if guide is None else sigma * guide
    return x.unsqueeze(0) + eps * scale


def multiplicative_weight_noise(
    w: Tensor,
    n: int,
    sigma: float,
    *,
    generator: torch.Generator | None = None,
    guide: Tensor | None = None,
) -> Tensor:
    """``n`` samples ``W ⊙ η``, η ~ N(1, σ²) element-wise (Bykov et al. 2022, Eq. 1 and below).

    Computed as ``W + σ · W ⊙ ε`` with ε ~ N(0, I): drawn in place and combined in place (two
    passes over memory, one allocation) when no gradient is needed, out of place when ``w``
    carries a graph. Shape ``(n, *w.shape)``; ``guide`` scales σ element-wise; ``sigma == 0``
    returns exact copies.
    """
    shape = (n, *w.shape)
    if sigma == 0 and guide is None:
        return w.unsqueeze(0).expand(shape).clone()
    eps = torch.empty(shape, dtype=w.dtype, device=w.device).normal_(generator=generator)
    if guide is not None:
        eps.mul_(guide)
    if w.requires_grad and torch.is_grad_enabled():
        return torch.addcmul(w, w, eps, value=sigma)
    return torch.addcmul(w, w, eps, value=sigma, out=eps)


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
        owners: dict[str, nn.Module] = {}
        for mname, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if p is not None:
                    owners.setdefault(f"{mname}.{pname}" if mname else pname, module)
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
