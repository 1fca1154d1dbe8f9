"""Library calls are quiet: no warnings and no progress output unless asked."""

from __future__ import annotations

import pytest
import torch

import wrapgrad

from .conftest import SmallCNN


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("saliency", {}),
        ("integrated_gradients", {"n_steps": 4}),
        ("input_x_gradient", {}),
        ("deep_lift", {}),
        ("guided_backprop", {}),
        ("gradient_shap", {"baselines": torch.zeros(2, 1, 8, 8), "n_samples": 2}),
        # A batch: Captum advises one example per call (a UserWarning on every call).
        ("lime", {"n_samples": 8}),
        ("kernel_shap", {"n_samples": 8}),
    ],
)
def test_a_plain_explain_call_emits_no_warning(method, options, capsys) -> None:
    model = SmallCNN().eval()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = wrapgrad.wrap(model, method, **options)(x, target=1)
    assert out.shape == x.shape
    assert not x.requires_grad  # the caller's tensor is left as it was
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
