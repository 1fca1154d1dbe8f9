"""Curve metrics: deletion/insertion (MoRF/LeRF), SIC/AIC performance-information curves and the
IG saturation curve. Kernels return whole curves; the metric classes return one area per sample
and keep the curve one call away (``metric.curve(model, inputs, target, explain)``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wrapgrad.errors import WrapgradValueError
from wrapgrad_metrics.functional import reduce_channels
from wrapgrad_metrics.surrogate import explain_map, resolve_target, target_logits

__all__ = [
    "PIC_FRACTIONS",
    "Curve",
    "Deletion",
    "IGSaturation",
    "Insertion",
    "PerformanceInformationCurve",
    "SaturationCurve",
    "ig_saturation_curve",
    "perturbation_curve",
    "pic_curve",
    "trapezoid",
]

#: Kapishnikov et al. (2019)'s fractions of the most important pixels re-introduced.
PIC_FRACTIONS = (
    0.0,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.07,
    0.1,
    0.13,
    0.21,
    0.34,
    0.5,
    0.75,
    1.0,
)


@attrs.frozen(kw_only=True)
class Curve:
    """A per-sample curve: ``x`` ``(B, S)`` (or ``(S,)`` shared) and ``y`` ``(B, S)``."""

    x: Tensor
    y: Tensor
    auc: Tensor
    """``(B,)``: the area under ``y(x)`` (trapezoid rule)."""


@attrs.frozen(kw_only=True)
class SaturationCurve:
    """The IG path diagnostics of Jha et al. (2022, Figs. 3-4), per sample."""

    alphas: Tensor
    """``(S,)`` path positions (midpoints)."""
    logits: Tensor
    """``(B, S)``: :math:`f_t(b + \\alpha (x - b))`."""
    grad_norms: Tensor
    """``(B, S)``: :math:`\\|\\nabla f_t\\|_2` along the path."""
    alignment: Tensor
    """``(B, S)``: cosine between the gradient at α and the path's mean gradient (the IG
    direction); near 0 after saturation means the late gradients cancel out."""
    saturation_alpha: Tensor
    """``(B,)``: the first α where the logit has covered 95% of its change."""
    post_saturation_share: Tensor
    """``(B,)``: the share of the path's gradient mass (sum of norms) after saturation."""


def trapezoid(y: Tensor, x: Tensor) -> Tensor:
    """Area under ``y`` over ``x`` along the last axis (``x`` broadcast to ``y``)."""
    y = y.to(torch.float64)
    x = x.to(device=y.device, dtype=torch.float64).expand_as(y)
    return ((y[..., 1:] + y[..., :-1]) * (x[..., 1:] - x[..., :-1])).sum(dim=-1) / 2


def _importance_order(attributions: Tensor, inputs: Tensor, descending: bool) -> tuple[Tensor, int]:
    """Feature order (by magnitude, stable) over the map's positions; image maps are summed over
    channels and a position covers all channels. Returns ``(order (B, N), channels)``."""
    a = attributions.detach()
    if a.shape != inputs.shape:
        raise WrapgradValueError(
            f"attributions: expected the inputs' shape {tuple(inputs.shape)}, got {tuple(a.shape)}"
        )
    channels = 1
    if a.dim() >= 4:
        channels = a.shape[1]
        a = reduce_channels(a, "sum_abs")
    else:
        a = a.abs()
    flat = a.reshape(a.shape[0], -1)
    order = torch.sort(flat, dim=1, descending=descending, stable=True).indices
    return order, channels


def _position_masks(order: Tensor, counts: Sequence[int], inputs: Tensor, channels: int) -> Tensor:
    """``(S, B, *inputs.shape[1:])`` masks, True on the first ``counts[s]`` positions of ``order``."""
    bsz, n = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=order.device).expand(bsz, n))
    c = torch.tensor(list(counts), device=order.device).reshape(-1, 1, 1)
    masks = rank.unsqueeze(0) < c  # (S, B, N)
    spatial = inputs.shape[2:] if inputs.dim() >= 4 else inputs.shape[1:]
    masks = masks.reshape(len(counts), bsz, *spatial)
    if inputs.dim() >= 4:
        masks = masks.unsqueeze(2).expand(len(counts), *inputs.shape)
    return masks


def _scores(model: Callable[..., Tensor], x: Tensor, t: Tensor, softmax: bool) -> Tensor:
    with torch.no_grad():
        out = model(x)
    out = out.reshape(out.shape[0], -1)
    if softmax:
        out = out.softmax(dim=1)
    return out.gather(1, t[:, None]).squeeze(1)


def perturbation_curve(
    model: Callable[..., Tensor],
    inputs: Tensor,
    target: Tensor,
    attributions: Tensor,
    *,
    mode: str = "deletion",
    order: str = "morf",
    n_steps: int = 20,
    baseline: float | Tensor = 0.0,
    softmax: bool = True,
) -> Curve:
    """Deletion/insertion curves (Samek et al. 2017; Petsiuk et al. 2018).

    The positions are ordered by attribution magnitude: most relevant first (``"morf"``) or least
    relevant first (``"lerf"``). ``"deletion"`` replaces the first fraction ``s / n_steps`` of them
    by ``baseline``; ``"insertion"`` starts from ``baseline`` and reveals them. ``y`` is the
    target's softmax probability (or logit, ``softmax=False``); ``x`` the fraction.
    """
    if mode not in ("deletion", "insertion"):
        raise WrapgradValueError(f"mode: expected 'deletion' or 'insertion', got {mode!r}")
    if order not in ("morf", "lerf"):
        raise WrapgradValueError(f"order: expected 'morf' or 'lerf', got {order!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise WrapgradValueError(f"n_steps: expected a positive int, got {n_steps!r}")
    x = inputs.detach()
    idx, channels = _importance_order(attributions, x, descending=order == "morf")
    n = idx.shape[1]
    fractions = torch.linspace(0, 1, n_steps + 1, dtype=torch.float64)
    counts = [round(float(f) * n) for f in fractions]
    masks = _position_masks(idx, counts, x, channels)
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    ys = []
    for m in masks:
        z = torch.where(m, base, x) if mode == "deletion" else torch.where(m, x, base)
        ys.append(_scores(model, z, target, softmax))
    y = torch.stack(ys, dim=1)
    return Curve(x=fractions, y=y, auc=trapezoid(y, fractions))


class _MapCurve:
    """A curve computed from a map: ``curve(model, inputs, target, explain)`` and, as the
    metric, its area."""

    higher_is_better: bool | None = True

    def _curve(self, model: Callable[..., Tensor], x: Tensor, t: Tensor, a: Tensor) -> Curve:
        raise NotImplementedError

    def curve(
        self, model: Callable[..., Tensor], inputs: Tensor, target: Any, explain: Callable[..., Any]
    ) -> Curve:
        t = resolve_target(model, inputs, target)
        return self._curve(model, inputs, t, explain_map(explain, inputs, t))

    def __call__(
        self, model: Callable[..., Tensor], inputs: Tensor, target: Any, explain: Callable[..., Any]
    ) -> Tensor:
        return self.curve(model, inputs, target, explain).auc


class _CurveMetric(_MapCurve):
    mode = "deletion"
    higher_is_better: bool | None = False

    def __init__(
        self,
        *,
        order: str = "morf",
        n_steps: int = 20,
        baseline: float = 0.0,
        softmax: bool = True,
    ) -> None:
        if order not in ("morf", "lerf"):
            raise WrapgradValueError(f"order: expected 'morf' or 'lerf', got {order!r}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise WrapgradValueError(f"n_steps: expected a positive int, got {n_steps!r}")
        self.order = order
        self.n_steps = n_steps
        self.baseline = baseline
        self.softmax = softmax

    def _curve(self, model: Callable[..., Tensor], x: Tensor, t: Tensor, a: Tensor) -> Curve:
        return perturbation_curve(
            model,
            x,
            t,
            a,
            mode=self.mode,
            order=self.order,
            n_steps=self.n_steps,
            baseline=self.baseline,
            softmax=self.softmax,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order!r}, n_steps={self.n_steps})"


class Deletion(_CurveMetric):
    """Area under the deletion curve (MoRF: lower is better; LeRF: higher is better)."""

    mode = "deletion"


class Insertion(_CurveMetric):
    """Area under the insertion curve (MoRF: higher is better; LeRF: lower is better)."""

    mode = "insertion"
    higher_is_better = True


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` images, reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    kx = kernel.reshape(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = kernel.reshape(1, 1, -1, 1).expand(c, 1, -1, 1)
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), ky, groups=c)


def _compressed_size(x: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Bytes of each image quantised to 8 bits and zlib-compressed (the information estimate)."""
    q = ((x - low) / (high - low).clamp_min(1e-12)).clamp(0, 1) * 255
    arr = q.round().to(torch.uint8).cpu().numpy()
    return torch.tensor(
        [len(zlib.compress(np.ascontiguousarray(a).tobytes(), 9)) for a in arr],
        dtype=torch.float64,
    )


def pic_curve(
    model: Callable[..., Tensor],
    inputs: Tensor,
    target: Tensor,
    attributions: Tensor,
    *,
    kind: str = "sic",
    fractions: Sequence[float] = PIC_FRACTIONS,
    blur_sigma: float | None = None,
) -> Curve:
    """Performance-information curves (Kapishnikov et al. 2019, XRAI Sec. 4.1), as used by Jha
    et al. (2022, Table 2).

    The most important pixels (fractions ``fractions``) are re-introduced into a blurred copy of
    the image. For each such image the *information* is its compressed size normalised between
    the blurred (0) and the original image (1), and the *performance* is the target's softmax
    score normalised the same way (SIC) or 1 if the prediction is the target (AIC), both clipped
    to [0, 1]. ``auc`` integrates performance over information (points sorted by information).
    The information estimate uses zlib of the 8-bit image where the paper used WebP; the blur is
    Gaussian with ``blur_sigma`` (default: an eighth of the image side) where the paper used a
    bokeh kernel.
    """
    if kind not in ("sic", "aic"):
        raise WrapgradValueError(f"kind: expected 'sic' or 'aic', got {kind!r}")
    x = inputs.detach()
    if x.dim() != 4:
        raise WrapgradValueError(
            f"inputs: performance-information curves need images (B, C, H, W), got shape "
            f"{tuple(x.shape)}"
        )
    fr = sorted({float(f) for f in fractions} | {0.0, 1.0})
    if fr[0] < 0 or fr[-1] > 1:
        raise WrapgradValueError(f"fractions: expected values in [0, 1], got {list(fractions)}")
    sigma = blur_sigma if blur_sigma is not None else max(x.shape[-2:]) / 8
    blurred = gaussian_blur(x, sigma)
    idx, channels = _importance_order(attributions, x, descending=True)
    n = idx.shape[1]
    masks = _position_masks(idx, [round(f * n) for f in fr], x, channels)
    low = x.reshape(x.shape[0], -1).amin(dim=1).reshape(-1, 1, 1, 1)
    high = x.reshape(x.shape[0], -1).amax(dim=1).reshape(-1, 1, 1, 1)
    info_lo = _compressed_size(blurred, low, high)
    info_hi = _compressed_size(x, low, high)
    p_lo = _scores(model, blurred, target, True).to(torch.float64)
    p_hi = _scores(model, x, target, True).to(torch.float64)
    infos, perfs = [], []
    for m in masks:
        z = torch.where(m, x, blurred)
        info = (_compressed_size(z, low, high) - info_lo) / (info_hi - info_lo).clamp_min(1.0)
        infos.append(info.clamp(0, 1))
        if kind == "sic":
            p = _scores(model, z, target, True).to(torch.float64)
            den = p_hi - p_lo
            perf = torch.where(den.abs() > 1e-12, (p - p_lo) / den, torch.ones_like(p))
        else:
            with torch.no_grad():
                out = model(z)
            perf = (out.reshape(out.shape[0], -1).argmax(dim=1) == target).to(torch.float64)
        perfs.append(perf.cpu().clamp(0, 1))
    info_t = torch.stack(infos, dim=1)
    perf_t = torch.stack(perfs, dim=1)
    order = torch.sort(info_t, dim=1, stable=True).indices
    info_s = info_t.gather(1, order)
    perf_s = perf_t.gather(1, order)
    return Curve(x=info_s, y=perf_s, auc=trapezoid(perf_s, info_s))


class PerformanceInformationCurve(_MapCurve):
    """Area under the SIC (softmax) or AIC (accuracy) curve; higher is better. See
    :func:`pic_curve`."""

    higher_is_better = True

    def __init__(
        self,
        kind: str = "sic",
        *,
        fractions: Sequence[float] = PIC_FRACTIONS,
        blur_sigma: float | None = None,
    ) -> None:
        if kind not in ("sic", "aic"):
            raise WrapgradValueError(f"kind: expected 'sic' or 'aic', got {kind!r}")
        self.kind = kind
        self.fractions = tuple(fractions)
        self.blur_sigma = blur_sigma

    def _curve(self, model: Callable[..., Tensor], x: Tensor, t: Tensor, a: Tensor) -> Curve:
        return pic_curve(
            model, x, t, a, kind=self.kind, fractions=self.fractions, blur_sigma=self.blur_sigma
        )


def ig_saturation_curve(
    model: Callable[..., Tensor],
    inputs: Tensor,
    target: Any = None,
    *,
    baselines: float | Tensor = 0.0,
    n_steps: int = 50,
    threshold: float = 0.95,
) -> SaturationCurve:
    """The logit, gradient norm and gradient alignment along the IG path
    :math:`x_\\alpha = b + \\alpha (x - b)` (Jha et al. 2022, Sec. "Saturation Effect of
    Integrated Gradient", Figs. 3-4; Miglani et al. 2020).

    The path is sampled at the midpoints :math:`\\alpha_s = (s + 1/2)/S`. Saturation is the first
    :math:`\\alpha_s` where :math:`(f_t(x_{\\alpha_s}) - f_t(b)) / (f_t(x) - f_t(b))` reaches
    ``threshold`` (the last point if it never does); ``post_saturation_share`` is
    :math:`\\sum_{\\alpha_s > \\alpha^*} \\|\\nabla f_t(x_{\\alpha_s})\\| / \\sum_s
    \\|\\nabla f_t(x_{\\alpha_s})\\|`.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise WrapgradValueError(f"n_steps: expected an int >= 2, got {n_steps!r}")
    x = inputs.detach()
    t = resolve_target(model, x, target)
    base = torch.as_tensor(baselines, dtype=x.dtype, device=x.device).expand_as(x)
    alphas = (torch.arange(n_steps, dtype=x.dtype, device=x.device) + 0.5) / n_steps
    path = base.unsqueeze(0) + alphas.reshape(-1, *([1] * x.dim())) * (x - base).unsqueeze(0)
    path = path.reshape(n_steps * x.shape[0], *x.shape[1:]).requires_grad_(True)
    logits = target_logits(model, path, t.repeat(n_steps))
    (g,) = torch.autograd.grad(logits.sum(), path)
    bsz = x.shape[0]
    logits = logits.detach().reshape(n_steps, bsz).T.to(torch.float64)
    g = g.reshape(n_steps, bsz, -1).transpose(0, 1).to(torch.float64)  # (B, S, N)
    norms = g.norm(dim=2)
    mean = g.mean(dim=1, keepdim=True)
    align = F.cosine_similarity(g, mean.expand_as(g), dim=2, eps=1e-30)
    with torch.no_grad():
        f_b = target_logits(model, base, t).to(torch.float64)
        f_x = target_logits(model, x, t).to(torch.float64)
    change = f_x - f_b  # the logit may also fall along the path: keep the sign
    tiny = torch.full_like(change, 1e-12)
    change = torch.where(change.abs() > 1e-12, change, torch.where(change < 0, -tiny, tiny))
    covered = (logits - f_b[:, None]) / change[:, None]
    reached = covered >= threshold
    first = torch.where(
        reached.any(dim=1),
        reached.to(torch.int64).argmax(dim=1),
        torch.full_like(f_b, n_steps - 1).long(),
    )
    sat_alpha = alphas.to(torch.float64)[first]
    after = alphas.to(torch.float64)[None, :] > sat_alpha[:, None]
    share = (norms * after).sum(dim=1) / norms.sum(dim=1).clamp_min(1e-300)
    return SaturationCurve(
        alphas=alphas.to(torch.float64),
        logits=logits,
        grad_norms=norms,
        alignment=align,
        saturation_alpha=sat_alpha,
        post_saturation_share=share,
    )


class IGSaturation:
    """The share of the IG path's gradient mass that comes after the logit saturates (Jha et al.
    2022: large for ResNets, small for neural SDEs); lower is better. ``curve`` gives the full
    :class:`SaturationCurve`. ``explain`` is not used (IG's own path is examined)."""

    higher_is_better = False

    def __init__(
        self, *, baselines: float | Tensor = 0.0, n_steps: int = 50, threshold: float = 0.95
    ) -> None:
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
            raise WrapgradValueError(f"n_steps: expected an int >= 2, got {n_steps!r}")
        if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise WrapgradValueError(f"threshold: expected a number in (0, 1], got {threshold!r}")
        self.baselines = baselines
        self.n_steps = n_steps
        self.threshold = threshold

    def curve(
        self, model: Callable[..., Tensor], inputs: Tensor, target: Any, explain: Any = None
    ) -> SaturationCurve:
        return ig_saturation_curve(
            model,
            inputs,
            target,
            baselines=self.baselines,
            n_steps=self.n_steps,
            threshold=self.threshold,
        )

    def __call__(
        self, model: Callable[..., Tensor], inputs: Tensor, target: Any, explain: Any = None
    ) -> Tensor:
        return self.curve(model, inputs, target).post_saturation_share
