"""Hugging Face models wrap directly: ModelOutput outputs, keyword inputs, no logits wrapper.

The models are randomly initialised from small configs (nothing is downloaded)."""

from __future__ import annotations

import functools

import pytest
import torch
from captum.attr import LayerIntegratedGradients, Saliency
from torch import nn

import wrapgrad
from wrapgrad.errors import WrapgradTypeError, WrapgradValueError
from wrapgrad.guard import ModelSnapshot

from ._transformers import tiny_bert, tiny_vit

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    return tiny_bert()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return tiny_vit()


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return ids, mask


class _Logits(nn.Module):
    """The hand-written wrapper users need with Captum alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def test_bert_layer_ig_with_keyword_inputs_equals_captum_with_a_logits_wrapper(bert) -> None:
    ids, mask = _tokens()
    snap = ModelSnapshot(bert)
    explain = wrapgrad.wrap(bert, "layer_integrated_gradients", layer="bert.embeddings", n_steps=5)
    maps = explain({"input_ids": ids}, target=1, forward_kwargs={"attention_mask": mask})
    assert set(maps) == {"input_ids"}
    wrapped = _Logits(bert)
    expected = LayerIntegratedGradients(wrapped, bert.bert.embeddings).attribute(
        ids, target=1, additional_forward_args=(mask,), n_steps=5
    )
    torch.testing.assert_close(maps["input_ids"], expected)
    assert snap.differences() == []
    # Positional inputs work the same (BERT's first two parameters are input_ids, attention_mask).
    positional = explain(ids, target=1, additional_forward_args=(mask,))
    torch.testing.assert_close(positional, expected)


def test_bert_noisegrad_on_layer_ig_wraps_without_a_logits_wrapper(bert) -> None:
    ids, mask = _tokens()
    snap = ModelSnapshot(bert)
    explain = wrapgrad.wrap(
        bert,
        "layer_integrated_gradients",
        enhancer="noisegrad",
        layer="bert.embeddings",
        n_steps=3,
        n_samples=2,
        sigma=0.2,
        seed=0,
    )
    plain = wrapgrad.wrap(bert, "layer_integrated_gradients", layer="bert.embeddings", n_steps=3)
    call = {"target": 2, "forward_kwargs": {"attention_mask": mask}}
    a = explain({"input_ids": ids}, **call)["input_ids"]
    assert a.shape == (2, 7, 16)
    assert torch.isfinite(a).all()
    assert torch.equal(a, explain({"input_ids": ids}, **call)["input_ids"])  # seeded
    assert not torch.equal(a, plain({"input_ids": ids}, **call)["input_ids"])  # noise arrived
    assert snap.differences() == []


@pytest.mark.parametrize("enhancer", [None, "smoothgrad", "noisegrad", "fusiongrad", "vargrad"])
def test_vit_through_saliency_with_every_enhancer(vit, enhancer) -> None:
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    snap = ModelSnapshot(vit)
    options = {} if enhancer is None else {"n_samples": 2, "seed": 0}
    if enhancer == "fusiongrad":
        options["n_models"] = 2
    a = wrapgrad.wrap(vit, "saliency", enhancer=enhancer, **options)(x, target=3)
    assert a.shape == x.shape
    assert torch.isfinite(a).all()
    if enhancer is None:
        logits = type("L", (nn.Module,), {"forward": lambda self, x: vit(x).logits})()
        torch.testing.assert_close(
            a, Saliency(logits).attribute(x.clone().requires_grad_(), target=3)
        )
    assert snap.differences() == []


def test_output_selector_forms_and_bad_keys(vit) -> None:
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    base = wrapgrad.wrap(vit, "saliency")(x, target=0)
    for output in ("logits", 0, lambda out: out.logits):
        torch.testing.assert_close(wrapgrad.wrap(vit, "saliency", output=output)(x, target=0), base)
    with pytest.raises(WrapgradValueError, match=r"^output: .*no tensor entry 'scores'.*'logits'"):
        wrapgrad.wrap(vit, "saliency", output="scores")(x, target=0)
    with pytest.raises(WrapgradTypeError, match=r"^output: expected None, a key"):
        wrapgrad.wrap(vit, "saliency", output=1.5)


def test_keyword_input_errors_name_the_argument(bert) -> None:
    ids, mask = _tokens()
    explain = wrapgrad.wrap(bert, "layer_integrated_gradients", layer="bert.embeddings", n_steps=2)
    with pytest.raises(WrapgradValueError, match=r"^inputs: expected at least one keyword"):
        explain({}, target=0)
    with pytest.raises(WrapgradValueError, match=r"^additional_forward_args: with keyword inputs"):
        explain(
            {"input_ids": ids},
            target=0,
            additional_forward_args=(mask,),
            forward_kwargs={"token_type_ids": torch.zeros_like(ids)},
        )
    with pytest.raises(WrapgradTypeError, match=r"^forward_kwargs: expected a dict"):
        explain({"input_ids": ids}, target=0, forward_kwargs=[mask])


def test_bert_smoothgrad_on_the_word_embeddings(bert) -> None:
    """SmoothGrad on text: the noise goes on the embedding layer's output (noise_layer)."""
    ids, mask = _tokens()
    snap = ModelSnapshot(bert)
    layer = "bert.embeddings.word_embeddings"
    call = {"target": 1, "forward_kwargs": {"attention_mask": mask}}
    plain = wrapgrad.wrap(bert, "layer_integrated_gradients", layer=layer, n_steps=3)
    smoothgrad = functools.partial(
        wrapgrad.wrap,
        bert,
        "layer_integrated_gradients",
        enhancer="smoothgrad",
        layer=layer,
        n_steps=3,
        noise_layer=layer,
    )
    explain = smoothgrad(noise_level=0.1, seed=0, n_samples=3)
    a = explain({"input_ids": ids}, **call)["input_ids"]
    base = plain({"input_ids": ids}, **call)["input_ids"]
    assert a.shape == base.shape == (2, 7, 16)
    assert torch.isfinite(a).all()
    assert not torch.equal(a, base)  # the noise reached the embeddings
    assert torch.equal(a, explain({"input_ids": ids}, **call)["input_ids"])  # seeded
    zero = smoothgrad(noise_level=0.0, enhancer_options={"n_samples": 2})
    torch.testing.assert_close(zero({"input_ids": ids}, **call)["input_ids"], base)
    assert snap.differences() == []
