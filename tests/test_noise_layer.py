"""Input noise on a layer's output (``noise_layer``, issue 12): SmoothGrad on embeddings for text
models, without a hook on the user's model, the same draws for the same seed."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn
from torch.nn.modules import module as torch_module
from wrapgrad_noise.perturbers import InputGaussian

import wrapgrad
from tests.conftest import SmallCNN
from wrapgrad.engine.rng import derive_seeds, make_generator, sub_generator
from wrapgrad.errors import UnknownNameError, WrapgradValueError
from wrapgrad.functional import ModelSnapshot


class Text(nn.Module):
    """Token ids -> embedding -> mean over tokens -> linear."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.ids = nn.Identity()  # integer output: not a place for noise
        self.emb = nn.Embedding(20, 6)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.emb(self.ids(ids))).mean(1))


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(1, 20, (3, 5), generator=torch.Generator().manual_seed(0))


def no_global_hooks() -> bool:
    return not torch_module._global_forward_hooks


def hand_layer_noise(alpha: float) -> object:
    """What ``noise_layer`` promises, written out: in every forward pass, each block of ``B``
    rows of the layer's output gets ``sample(block) - block`` from the draw's seed."""
    perturber = InputGaussian(noise_level=alpha)

    def hook(mod: nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        b = hook.batch  # type: ignore[attr-defined]
        blocks = out.detach().reshape(-1, b, *out.shape[1:])
        noise = torch.cat(
            [
                perturber.sample(blk, 1, generator=sub_generator(out.device, hook.seed))[0] - blk  # type: ignore[attr-defined]
                for blk in blocks
            ]
        )
        return out + noise

    return hook


def test_layer_integrated_gradients_with_smoothgrad_on_the_embedding(ids: torch.Tensor) -> None:
    model = Text().eval()
    snap = ModelSnapshot(model)
    n, alpha, target = 4, 0.3, torch.tensor([0, 2, 1])
    explain = wrapgrad.wrap(
        model, "layer_integrated_gradients", layer="emb", enhancer="smoothgrad",
        noise_layer="emb", noise_level=alpha, n_samples=n, seed=0, guard="verify",
    )  # fmt: skip
    out = explain(ids, target=target, n_steps=5)
    assert out.shape == (3, 5, 6)
    assert no_global_hooks()
    assert snap.differences() == []
    # The hand-written loop: per draw j, Captum's LayerIntegratedGradients on the model whose
    # embedding output carries draw j's noise; seeds from the engine's per-sample table.
    seeds = derive_seeds(make_generator("cpu", seed=0), (1, n + 1))[0]
    hook = hand_layer_noise(alpha)
    hook.batch = 3  # type: ignore[attr-defined]
    expected = torch.zeros_like(out)
    for j in range(n):
        hook.seed = seeds[j + 1]  # type: ignore[attr-defined]
        handle = model.emb.register_forward_hook(hook)
        try:
            lig = LayerIntegratedGradients(model, model.emb)
            expected += lig.attribute(ids, target=target, n_steps=5).detach() / n
        finally:
            handle.remove()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # The noise reached the map, each draw its own; the seed fixes the draws.
    base = wrapgrad.wrap(model, "layer_integrated_gradients", layer="emb")(
        ids, target=target, n_steps=5
    )
    assert not torch.allclose(out, base)
    assert torch.equal(out, explain(ids, target=target, n_steps=5))
    other = wrapgrad.wrap(
        model, "layer_integrated_gradients", layer="emb", enhancer="smoothgrad",
        noise_layer="emb", noise_level=alpha, n_samples=n, seed=1,
    )(ids, target=target, n_steps=5)  # fmt: skip
    assert not torch.allclose(out, other)


class Prefixed(nn.Module):
    """SmallCNN behind an identity layer: noise on ``inp``'s output is noise on the inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Identity()
        self.net = SmallCNN()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.inp(x))


@pytest.mark.parametrize("enhancer", ["smoothgrad", "fusiongrad", "vargrad"])
@pytest.mark.parametrize("max_batch", [2, 1000])
def test_noise_on_an_identity_layer_is_input_noise(enhancer: str, max_batch: int) -> None:
    # Same seeds, same per-sample blocks: the layer noise of each draw equals its input noise,
    # so the maps agree whatever the chunking, and each draw has its own noise.
    model = Prefixed().eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    opts = {"n_samples": 3, "seed": 5, "abs": False, "max_batch": max_batch}
    if enhancer == "fusiongrad":
        opts["n_models"] = 2
    res = wrapgrad.wrap(
        model, "saliency", enhancer, noise_layer="inp", return_samples=True, **opts
    )(x, target=1)
    ref = wrapgrad.wrap(model, "saliency", enhancer, return_samples=True, **opts)(x, target=1)
    torch.testing.assert_close(res.samples, ref.samples, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.attributions, ref.attributions, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(res.samples[0], res.samples[1])
    assert no_global_hooks()


def test_bad_noise_layers_name_the_option(ids: torch.Tensor) -> None:
    model = Text().eval()
    snap = ModelSnapshot(model)
    kw = {"layer": "emb", "n_samples": 2, "seed": 0}
    with pytest.raises(UnknownNameError, match=r"noise_layer: unknown layer 'embb'.*'emb'"):
        wrapgrad.wrap(model, "layer_integrated_gradients", "smoothgrad", noise_layer="embb", **kw)(
            ids, target=0
        )
    with pytest.raises(WrapgradValueError, match=r"noise_layer: 'ids' returns dtype torch.int64"):
        wrapgrad.wrap(model, "layer_integrated_gradients", "smoothgrad", noise_layer="ids", **kw)(
            ids, target=0
        )
    with pytest.raises(WrapgradValueError, match=r"noise_layer: .* not 'vmap'"):
        wrapgrad.wrap(model, "saliency", "fusiongrad", noise_layer="emb", strategy="vmap")
    # Without noise_layer, token ids still get the clear error.
    with pytest.raises(WrapgradValueError, match="noise_layer='<embedding module>'"):
        wrapgrad.wrap(model, "layer_integrated_gradients", "smoothgrad", **kw)(ids, target=0)
    assert no_global_hooks()
    assert snap.differences() == []


def test_noisegrad_with_layer_noise_via_fusiongrad_on_text(ids: torch.Tensor) -> None:
    model = Text().eval()
    out = wrapgrad.wrap(
        model, "layer_integrated_gradients", layer="emb", enhancer="fusiongrad",
        noise_layer="emb", n_models=2, n_samples=2, seed=0, guard="verify",
    )(ids, target=1, n_steps=4)  # fmt: skip
    assert out.shape == (3, 5, 6)
    assert torch.isfinite(out).all()
    assert no_global_hooks()
