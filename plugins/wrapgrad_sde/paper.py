"""The numbers of Jha et al. (2022) that a run is compared with (ResNet-50 on ImageNet).

Table 1 (sensitivity S_r, lower is better; columns: standard ResNet, neural SDE with Brownian
noise, neural SDE with attribution-driven noise) and Table 2 (SIC of the attributions, higher is
better). The paper gives no number for localisation (it reports "a slightly higher AUC score")
and no accuracy.
"""

from __future__ import annotations

__all__ = ["PAPER_SOURCE", "TABLES", "paper_values"]

PAPER_SOURCE = "Jha et al. (2022), ResNet-50 on ImageNet: Table 1 (sensitivity) and Table 2 (SIC)"

#: metric -> (method, enhanced by SmoothGrad/NoiseTunnel) -> (ResNet, Brownian, Shaped)
#: (None where the paper gives no number).
TABLES: dict[str, dict[tuple[str, bool], tuple[float | None, float | None, float | None]]] = {
    "sensitivity": {
        ("integrated_gradients", False): (0.576, 0.450, 0.420),
        ("integrated_gradients", True): (1.036, 0.983, 0.866),  # IG + NT
        ("saliency", False): (0.596, 0.551, 0.478),
        ("deep_lift", False): (0.729, 0.613, 0.554),
        ("deep_lift_shap", False): (0.363, 0.323, 0.318),
    },
    "sic": {
        ("saliency", False): (0.510, None, None),  # "Gradients"
        ("integrated_gradients", False): (0.544, 0.652, 0.683),
        ("integrated_gradients", True): (0.590, None, None),  # IG + Noise Tunnel
    },
}

_KINDS = ("resnet", "brownian", "shaped")


def paper_values(metric: str, method: str, enhanced: bool) -> dict[str, float | None] | None:
    """The paper's values of ``metric`` (``"sensitivity"`` or ``"sic"``) for ``method``
    (enhanced with SmoothGrad or not) by kind, or None where the paper has no row."""
    row = TABLES.get(metric, {}).get((method, bool(enhanced)))
    return None if row is None else dict(zip(_KINDS, row, strict=True))
