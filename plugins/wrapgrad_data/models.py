"""Small reference models: a plain CNN and a small ResNet with BatchNorm.

Both take ``in_channels`` and ``num_classes`` and work on any image size of at least 8x8 (global
pooling before the classifier), and both end in a linear layer producing logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wrapgrad.checks import check_choice
from wrapgrad.errors import WrapgradTypeError

__all__ = ["BasicBlock", "SmallCNN", "SmallResNet", "small_cnn", "small_resnet"]


class SmallCNN(nn.Module):
    """Two conv/ReLU/max-pool stages, adaptive average pooling to 4x4, two linear layers.

    No BatchNorm: reaches ~98% on MNIST-5k, but stalls near 87% on CMNIST-like.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))


class BasicBlock(nn.Module):
    """He et al. (2016) basic residual block: two 3x3 conv + BatchNorm, ReLU, identity shortcut
    (a 1x1 conv + BatchNorm where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet for small images: a 3x3 stem (stride ``stem_stride``), three basic blocks (widths
    w, 2w, 4w; the last two downsample by 2), global average pooling and a linear classifier.

    ``blocks=2`` leaves out the first block, the one at the stem's full resolution (``layer1``
    is then an identity, so the other layers keep their names): on 3x32x32 images at width 16
    that is 7.8M multiply-adds a forward pass instead of 12.5M, 73,370 parameters instead of
    78,042, and an input gradient in about 0.7x the time on CPU (``benchmarks/bench_demo.py
    blocks``). With the ``cmnist`` recipe trained in ``channels_last`` it reached test accuracy
    0.886 (seed 0) against 0.90-0.92 for three blocks (``docs/demo.md``). A layer method on
    ``layer1`` then sees the stem's output."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 16,
        stem_stride: int = 1,
        blocks: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(blocks, bool) or not isinstance(blocks, int):  # 2.0 would key another cache
            raise WrapgradTypeError(f"blocks: expected the int 2 or 3, got {blocks!r}")
        check_choice(blocks, "blocks", (2, 3))
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.layer1: nn.Module = BasicBlock(width, width) if blocks == 3 else nn.Identity()
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


#: The factories registered as ``small_cnn`` and ``small_resnet`` (``wrapgrad_models``): each
#: builds an untrained model, its options the class's parameters.
small_cnn = SmallCNN
small_resnet = SmallResNet
