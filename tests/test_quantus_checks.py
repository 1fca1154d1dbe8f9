"""wrapgrad_quantus.fixes: the bridge's attribution check refuses exactly what Quantus' refuses,
and every Quantus metric class the bridge builds uses it."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
from quantus.helpers import asserts
from wrapgrad_quantus import quantus_metric
from wrapgrad_quantus.fixes import _fast_asserts, _few_distinct, fixed

X = np.zeros((2, 1, 3, 3), dtype=np.float32)
NAN = float("nan")


def _maps(*values: float) -> np.ndarray:
    """(2, 1, 3, 3) maps holding ``values`` first, the rest the last value."""
    flat = np.full(X.size, values[-1], dtype=np.float32)
    flat[: len(values)] = values
    return flat.reshape(X.shape)


CASES = {
    "distinct": _maps(0.1, 0.2),
    "all equal": _maps(0.3),
    "all zero": _maps(0.0),
    "all one": _maps(1.0),
    "all negative distinct": _maps(-0.1, -0.2),
    "signed zeros": _maps(-0.0, 0.0),
    "one nan then equal": _maps(NAN, 0.5),
    "equal then one nan": _maps(*([0.5] * (X.size - 1)), NAN),
    "all nan": _maps(NAN),
    "equal but the last": _maps(*([0.5] * (X.size - 1)), 0.6),
}


def _verdict(check, a: np.ndarray) -> str | None:
    try:
        check(x_batch=X, a_batch=a)
    except AssertionError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", CASES)
def test_same_verdict_and_message_as_quantus(case: str) -> None:
    a = CASES[case]
    assert _verdict(_fast_asserts().assert_attributions, a) == _verdict(
        asserts.assert_attributions, a
    )


def test_few_distinct_has_more_than_one_exactly_when_the_set_has() -> None:
    rng = np.random.default_rng(0)
    for values in (
        [],
        [1.0],
        [NAN],
        [1.0, 1.0, 1.0],
        [1.0, 1.0, 2.0],
        [0.0, -0.0],
        *[rng.integers(0, 2, size=5).astype(float).tolist() for _ in range(20)],
    ):
        assert (len(_few_distinct(values)) > 1) == (len(set(values)) > 1), values


def test_every_metric_class_checks_attributions_the_fast_way() -> None:
    from wrapgrad_quantus.metrics import quantus_metrics

    for name, cls in quantus_metrics().items():
        built = fixed(cls)
        assert issubclass(built, cls)
        for method in ("general_preprocess", "explain_batch"):
            assert getattr(built, method).__globals__["asserts"] is _fast_asserts(), (name, method)
    # and a bridge call still refuses constant maps with Quantus' message
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 2)).eval()
    metric = quantus_metric("Sparseness")
    with pytest.raises(AssertionError, match="uniformly distributed"):
        metric(model, torch.from_numpy(X) + 1, torch.zeros(2, dtype=torch.long), a_batch=_maps(0.3))
    assert fixed(quantus.Sparseness) is type(metric.quantus)
