"""Pure batched torch kernels for comparing attribution maps (one score per sample).

Every kernel takes maps of shape ``(B, ...)`` and returns a tensor of shape ``(B,)``. Ties are
handled as :mod:`scipy.stats` does: Kendall's tau-b, Spearman's rho on average ranks, ROC-AUC as
the Mann-Whitney statistic on average ranks (what :func:`sklearn.metrics.roc_auc_score` computes).

References:
    Ghorbani, Abid and Zou (2019), "Interpretation of neural networks is fragile": top-k
    intersection and the centre of attribution mass. Ivankay et al. (2022), FAR, Sec. 3: IN (top-k
    intersection) and CO (Kendall's rank order correlation).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wrapgrad.checks import check_map
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError

__all__ = [
    "CHANNEL_REDUCTIONS",
    "average_ranks",
    "check_pair",
    "kendall_tau",
    "mass_center",
    "normalized_importance",
    "reduce_channels",
    "resolve_k",
    "roc_auc",
    "spearman_rho",
    "topk_intersection",
    "topk_mask",
]

#: How a map's channel axis can be reduced before comparing maps.
CHANNEL_REDUCTIONS = (None, "sum_abs", "sum", "max_abs", "mean_abs")


def reduce_channels(maps: Tensor, reduction: str | None, channel_dim: int = 1) -> Tensor:
    """Reduce the channel axis of ``maps`` (``None`` keeps it).

    ``"sum_abs"``: :math:`\\sum_c |a_c|` (the usual image saliency), ``"sum"``, ``"max_abs"``,
    ``"mean_abs"``.
    """
    if reduction is None:
        return maps
    if reduction not in CHANNEL_REDUCTIONS:
        raise WrapgradValueError(
            f"channel_reduction: expected one of {CHANNEL_REDUCTIONS}, got {reduction!r}"
        )
    if maps.dim() < 3:
        raise WrapgradValueError(
            f"channel_reduction: maps of shape {tuple(maps.shape)} have no channel axis "
            f"(expected (B, C, ...)); pass channel_reduction=None"
        )
    if reduction == "sum_abs":
        return maps.abs().sum(dim=channel_dim)
    if reduction == "sum":
        return maps.sum(dim=channel_dim)
    if reduction == "mean_abs":
        return maps.abs().mean(dim=channel_dim)
    return maps.abs().amax(dim=channel_dim)


def _as_maps(value: object, argument: str) -> Tensor:
    value = check_map(value, argument)
    if value.dim() < 2:
        raise WrapgradValueError(
            f"{argument}: expected a batch-first map of shape (B, ...) with at least 2 "
            f"dimensions, got shape {tuple(value.shape)}"
        )
    return value


def check_pair(
    a: Tensor,
    b: Tensor,
    *,
    channel_reduction: str | None = None,
    channel_dim: int = 1,
    abs: bool = False,
) -> tuple[Tensor, Tensor]:
    """Validate two batches of maps and flatten them to ``(B, N)`` (float64 for exact ranks)."""
    a = _as_maps(a, "a")
    b = _as_maps(b, "b")
    if a.shape != b.shape:
        raise WrapgradValueError(
            f"b: expected maps of the same shape as a {tuple(a.shape)}, got {tuple(b.shape)}"
        )
    a = reduce_channels(a.detach(), channel_reduction, channel_dim)
    b = reduce_channels(b.detach(), channel_reduction, channel_dim)
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    if abs:
        a, b = a.abs(), b.abs()
    return a, b


def topk_mask(maps: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` largest entries of each row of ``maps`` ``(B, N)``.

    Ties are broken towards the lower index (a stable descending sort), so the result is defined.
    """
    order = torch.sort(maps, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros_like(maps, dtype=torch.bool)
    return mask.scatter_(1, order, True)


def resolve_k(k: object, n: int, argument: str = "k") -> int:
    """``k`` as a count of features: an int ``1 <= k <= n`` as it is, or a fraction
    ``0 < k <= 1`` (a float) of the ``n`` features, rounded up (at least one feature)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise WrapgradTypeError(
            f"{argument}: expected an int count or a float fraction in (0, 1], got "
            f"{type(k).__name__}"
        )
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise WrapgradValueError(
                f"{argument}: expected a fraction in (0, 1] (or an int count), got {k}"
            )
        return max(1, min(n, math.ceil(k * n - 1e-9)))
    if not 1 <= k <= n:
        raise WrapgradValueError(
            f"{argument}: expected 1 <= k <= the number of features ({n}), got {k}"
        )
    return k


def topk_intersection(
    a: Tensor,
    b: Tensor,
    k: int | float,
    *,
    channel_reduction: str | None = None,
    channel_dim: int = 1,
    abs: bool = True,
) -> Tensor:
    """Top-k intersection (IN, Ghorbani et al. 2019; FAR Sec. 3): the fraction of the ``k`` most
    important features of ``a`` that are also among the ``k`` most important of ``b``,

    .. math:: \\mathrm{IN}_k(a, b) = |\\mathrm{top}_k(a) \\cap \\mathrm{top}_k(b)| / k

    Args:
        a, b: maps of the same shape ``(B, ...)``.
        k: how many features: an int ``1 <= k <=`` features per sample (after channel
            reduction), or a float fraction in ``(0, 1]`` of them (rounded up).
        channel_reduction: see :func:`reduce_channels`.
        abs: rank by magnitude (default: importance is magnitude, as in Ghorbani et al.);
            ``False`` ranks signed values.

    Returns:
        ``(B,)`` float64 in ``[0, 1]``. Ties at the k-th place are broken towards the lower
        index (see :func:`topk_mask`).
    """
    fa, fb = check_pair(a, b, channel_reduction=channel_reduction, channel_dim=channel_dim, abs=abs)
    k = resolve_k(k, fa.shape[1])
    both = topk_mask(fa, k) & topk_mask(fb, k)
    return both.sum(dim=1).to(torch.float64) / k


def average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..N of each row, ties given their average rank (``scipy.stats.rankdata``)."""
    s = torch.sort(x, dim=1).values
    first = torch.searchsorted(s, x, right=False)
    last = torch.searchsorted(s, x, right=True)
    return (first + last + 1).to(torch.float64) / 2.0


def _correlation(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` clamped to ``[-1, 1]``, NaN where ``den`` is 0 (a constant map)."""
    out = num / den
    return torch.where(den > 0, out, torch.full_like(out, float("nan"))).clamp(-1.0, 1.0)


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    num = (xc * yc).sum(dim=1)
    den = torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))
    return _correlation(num, den)


def spearman_rho(
    a: Tensor,
    b: Tensor,
    *,
    channel_reduction: str | None = None,
    channel_dim: int = 1,
    abs: bool = False,
) -> Tensor:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (as
    ``scipy.stats.spearmanr``; NaN where a map is constant).

    .. math:: \\rho = \\frac{\\mathrm{cov}(R(a), R(b))}{\\sigma_{R(a)} \\sigma_{R(b)}}
    """
    fa, fb = check_pair(a, b, channel_reduction=channel_reduction, channel_dim=channel_dim, abs=abs)
    return _pearson(average_ranks(fa), average_ranks(fb))


def _tied_pairs(sorted_rows: Tensor) -> Tensor:
    """Number of pairs with equal values in each row of an ascending ``(B, N)`` tensor."""
    n = sorted_rows.shape[1]
    idx = torch.arange(n, device=sorted_rows.device).expand_as(sorted_rows)
    first = torch.searchsorted(sorted_rows.contiguous(), sorted_rows.contiguous(), right=False)
    return (idx - first).sum(dim=1)


def _inversions(seq: Tensor) -> Tensor:
    """Pairs ``i < j`` with ``seq[i] > seq[j]`` per row: bottom-up merge sort, counted with
    :func:`torch.searchsorted` at every level (``O(N log^2 N)``, batched)."""
    bsz, n = seq.shape
    m = 1
    while m < n:
        m *= 2
    if m > n:  # +inf padding at the end adds no inversions
        pad = torch.full((bsz, m - n), float("inf"), dtype=seq.dtype, device=seq.device)
        seq = torch.cat([seq, pad], dim=1)
    count = torch.zeros(bsz, dtype=torch.int64, device=seq.device)
    w = 1
    while w < m:
        blocks = seq.reshape(bsz, m // (2 * w), 2, w)
        left = blocks[:, :, 0].contiguous()
        right = blocks[:, :, 1].contiguous()
        not_greater = torch.searchsorted(left, right, right=True)
        count += (w - not_greater).sum(dim=(1, 2))
        seq = torch.sort(blocks.reshape(bsz, m // (2 * w), 2 * w), dim=2).values.reshape(bsz, m)
        w *= 2
    return count


def kendall_tau(
    a: Tensor,
    b: Tensor,
    *,
    channel_reduction: str | None = None,
    channel_dim: int = 1,
    abs: bool = False,
) -> Tensor:
    """Kendall's tau-b (CO in FAR; ``scipy.stats.kendalltau``'s default), per sample:

    .. math:: \\tau_b = \\frac{n_c - n_d}{\\sqrt{(n_0 - n_1)(n_0 - n_2)}}

    with :math:`n_0 = N(N-1)/2`, :math:`n_1, n_2` the pairs tied in ``a`` resp. ``b``. Computed
    in :math:`O(N \\log^2 N)` (Knight's algorithm: discordant pairs are the inversions of ``b``
    sorted by ``(a, b)``), so full-size images are fine. NaN where a map is constant.
    """
    fa, fb = check_pair(a, b, channel_reduction=channel_reduction, channel_dim=channel_dim, abs=abs)
    n = fa.shape[1]
    # Lexicographic sort by (a, b): stable sort by b, then stable sort by a.
    ob = torch.sort(fb, dim=1, stable=True).indices
    a1 = torch.gather(fa, 1, ob)
    oa = torch.sort(a1, dim=1, stable=True).indices
    order = torch.gather(ob, 1, oa)
    sa = torch.gather(fa, 1, order)
    sb = torch.gather(fb, 1, order)
    n0 = n * (n - 1) // 2
    n1 = _tied_pairs(sa)
    n2 = _tied_pairs(torch.sort(fb, dim=1).values)
    # Pairs tied in both: runs of equal (a, b) in the lexicographic order.
    new = torch.ones_like(sa, dtype=torch.bool)
    new[:, 1:] = (sa[:, 1:] != sa[:, :-1]) | (sb[:, 1:] != sb[:, :-1])
    idx = torch.arange(n, device=sa.device).expand_as(sa)
    start = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), dim=1).values
    n3 = (idx - start).sum(dim=1)
    nd = _inversions(sb)
    num = (n0 - n1 - n2 + n3 - 2 * nd).to(torch.float64)
    den = torch.sqrt((n0 - n1).to(torch.float64) * (n0 - n2).to(torch.float64))
    return _correlation(num, den)


def normalized_importance(maps: Tensor, channel_reduction: str | None = "sum_abs") -> Tensor:
    """The normalised feature importance of Ghorbani et al.: magnitudes summed over channels,
    divided by their sum, so each sample sums to 1. Differentiable; shape ``(B, *spatial)``."""
    imp = (
        maps.abs() if channel_reduction is None else reduce_channels(maps, channel_reduction).abs()
    )
    flat = imp.reshape(imp.shape[0], -1)
    total = flat.sum(dim=1).clamp_min(torch.finfo(flat.dtype).tiny)
    return (flat / total[:, None]).reshape(imp.shape)


def mass_center(importance: Tensor) -> Tensor:
    """Centre of attribution mass (Ghorbani et al. 2019):
    :math:`C(I) = \\sum_i I_i \\, \\mathbf{p}_i / \\sum_i I_i` over the spatial positions
    :math:`\\mathbf{p}_i`. ``importance`` is ``(B, *spatial)`` and non-negative; returns
    ``(B, len(spatial))``. Differentiable."""
    spatial = importance.shape[1:]
    grids = torch.meshgrid(
        *[torch.arange(s, dtype=importance.dtype, device=importance.device) for s in spatial],
        indexing="ij",
    )
    coords = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (N, D)
    flat = importance.reshape(importance.shape[0], -1)
    total = flat.sum(dim=1, keepdim=True).clamp_min(torch.finfo(flat.dtype).tiny)
    return (flat @ coords) / total


def roc_auc(scores: Tensor, labels: Tensor) -> Tensor:
    """ROC-AUC of ``scores`` ``(B, N)`` against boolean ``labels`` ``(B, N)``, per row: the
    Mann-Whitney statistic on average ranks (ties count one half), which is what
    :func:`sklearn.metrics.roc_auc_score` returns.

    .. math:: \\mathrm{AUC} = \\frac{\\sum_{i \\in P} R_i - |P|(|P|+1)/2}{|P|\\,|N|}
    """
    labels = labels.to(torch.bool)
    ranks = average_ranks(scores.to(torch.float64))
    n_pos = labels.sum(dim=1).to(torch.float64)
    n_neg = labels.shape[1] - n_pos
    if bool(((n_pos == 0) | (n_neg == 0)).any()):
        row = int(((n_pos == 0) | (n_neg == 0)).nonzero()[0])
        raise WrapgradValueError(
            f"mask[{row}]: expected both foreground (True) and background (False) pixels; "
            f"the ROC-AUC is undefined for a mask of one class"
        )
    rank_sum = (ranks * labels).sum(dim=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
