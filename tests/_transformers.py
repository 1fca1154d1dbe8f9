"""Tiny, randomly initialised Hugging Face classifiers (nothing is downloaded), shared by the
tests that wrap transformers. Each is initialised from ``torch.manual_seed(0)``, in eval mode."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: What every tiny transformer here has: one layer of two heads, 16 wide.
_TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}


def _seeded(model_class: Any, config: Any) -> nn.Module:
    torch.manual_seed(0)
    return model_class(config).eval()


def tiny_bert() -> nn.Module:
    """``BertForSequenceClassification``: 50 tokens, 16 positions, 3 labels."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, max_position_embeddings=16, num_labels=3, **_TINY)
    return _seeded(BertForSequenceClassification, config)


def tiny_vit() -> nn.Module:
    """``ViTForImageClassification``: 3x8x8 images in 4x4 patches, 4 labels."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, num_labels=4, **_TINY)
    return _seeded(ViTForImageClassification, config)
