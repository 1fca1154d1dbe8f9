"""The example third-party plugin package (examples/plugin), installed by the test set-up."""

from __future__ import annotations

import pytest
import torch

import wrapgrad


def test_installed_plugin_is_discovered_through_its_entry_point(registry) -> None:
    rows = {(r.kind, r.name): r for r in wrapgrad.plugins()}
    row = rows.get(("metric", "cosine_similarity"))
    assert row is not None, "run `bash scripts/setup.sh test` to install examples/plugin"
    assert (row.plugin, row.distribution) == ("example", "wrapgrad-example-plugin")
    assert rows[("explainer", "gradient_x_sign")].distribution == "wrapgrad-example-plugin"


def test_plugin_components_work(registry, cnn, images, labels) -> None:
    cosine = registry.get("metric", "cosine_similarity").factory()
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(cosine(a, b), torch.tensor([1.0, 0.0], dtype=torch.float64))

    got = wrapgrad.wrap(cnn, "gradient_x_sign", guard="verify")(images, target=labels)
    saliency = wrapgrad.wrap(cnn, "saliency")(images, target=labels, abs=False)
    torch.testing.assert_close(got, saliency * images.sign())


def test_plugin_is_not_loaded_with_autoload_disabled(monkeypatch) -> None:
    monkeypatch.setenv("WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = wrapgrad.Registry()
    assert "gradient_x_sign" not in reg.names("explainer")
    with pytest.raises(wrapgrad.UnknownNameError):
        reg.get("metric", "cosine_similarity")
