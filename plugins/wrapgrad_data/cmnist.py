"""CMNIST-like: MNIST digits pasted on crops of natural photos, with ground-truth masks.

Built as in Bykov et al. (2022), NoiseGrad, appendix "CMNIST": each digit is resized from 28x28
to 16x16, rotated by a random angle in [-15, 15] degrees, and pasted at a random position on a
32x32 background; the backgrounds are random crops of the natural photos that scikit-image and
scikit-learn ship (the paper uses CIFAR-10, which would need a download), drawn independently of
the digit's class. Two ground-truth masks come with every image:

* ``"digit"``: the pixels of the pasted digit (where its opacity is above ``threshold``);
* ``"square"``: the 16x16 square the digit was pasted in (the paper's localisation mask).

Compositing (per pixel p of the square, opacity a_p of the rotated digit, colour c):

.. math:: x_p = (1 - a_p)\\, b_p + a_p\\, c, \\qquad a_p = d_p\\,[d_p > t]

with c white on dark squares and black on bright ones, so the digit is always visible. Nothing is
downloaded; the same seed gives the same images, masks and split.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wrapgrad.errors import WrapgradValueError
from wrapgrad_data.datasets import ImageDataset, split_indices
from wrapgrad_data.mnist import _check_limit, mnist_arrays

__all__ = ["PHOTOS", "background_photos", "compose", "load_cmnist", "rotate"]

#: The bundled photos used as backgrounds: (package, file name). Grey ones are repeated to RGB.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "astronaut.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "ihc.png"),
    ("skimage", "brick.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"),
)


def _read_photo(package: str, fname: str) -> np.ndarray:
    if package == "skimage":
        import skimage.data
        import skimage.io

        return np.asarray(skimage.io.imread(os.path.join(skimage.data.data_dir, fname)))
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image(fname))


@lru_cache(maxsize=4)
def background_photos(short_side: int = 96) -> tuple[Tensor, ...]:
    """The bundled photos as float RGB tensors ``(3, H, W)`` in ``[0, 1]``, the shorter side
    resized (with antialiasing) to ``short_side`` pixels so that a 32x32 crop shows a scene part."""
    out = []
    for package, fname in PHOTOS:
        arr = _read_photo(package, fname)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        arr = arr[..., :3].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else arr.max())
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        h, w = img.shape[1:]
        scale = short_side / min(h, w)
        size = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
        img = F.interpolate(img[None], size=size, mode="bilinear", antialias=True)[0]
        out.append(img.clamp(0.0, 1.0).contiguous())
    return tuple(out)


def rotate(images: Tensor, degrees: Tensor) -> Tensor:
    """Rotate a batch ``(N, C, H, W)`` about its centre by ``degrees`` ``(N,)`` (bilinear, zero fill)."""
    rad = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def compose(
    digits: Tensor, backgrounds: Tensor, offsets: Tensor, threshold: float = 0.2
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Paste digits on backgrounds (pure kernel).

    Args:
        digits: ``(N, 1, s, s)`` digit intensities in ``[0, 1]`` (already resized and rotated).
        backgrounds: ``(N, 3, H, W)`` in ``[0, 1]``.
        offsets: ``(N, 2)`` int rows/columns of the square's top-left corner.
        threshold: intensities at or below it are left out of the digit (opacity 0).

    Returns:
        ``(images, digit_mask, square_mask, colours)``: images ``(N, 3, H, W)``, bool masks
        ``(N, 1, H, W)``, and the digits' colours ``(N,)`` (1.0 white or 0.0 black).
    """
    n, _, s, _ = digits.shape
    alpha = torch.where(digits > threshold, digits, torch.zeros_like(digits))
    images = backgrounds.clone()
    digit_mask = torch.zeros(n, 1, *backgrounds.shape[2:], dtype=torch.bool)
    square_mask = torch.zeros_like(digit_mask)
    colours = torch.empty(n)
    for i in range(n):
        r, c = int(offsets[i, 0]), int(offsets[i, 1])
        patch = backgrounds[i, :, r : r + s, c : c + s]
        colour = 0.0 if float(patch.mean()) > 0.5 else 1.0
        colours[i] = colour
        images[i, :, r : r + s, c : c + s] = (1.0 - alpha[i]) * patch + alpha[i] * colour
        digit_mask[i, :, r : r + s, c : c + s] = alpha[i] > 0
        square_mask[i, :, r : r + s, c : c + s] = True
    return images, digit_mask, square_mask, colours


def load_cmnist(
    split: str = "train",
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    limit: int | None = None,
    size: int = 32,
    digit_size: int = 16,
    max_degrees: float = 15.0,
    copies: int = 1,
    return_parts: bool = False,
) -> ImageDataset:
    """CMNIST-like: 3x32x32 images in ``[0, 1]``, 10 classes, masks ``"digit"`` and ``"square"``.

    The digits are those of :func:`~wrapgrad_data.mnist.load_mnist` with the same ``split`` and
    ``seed`` (4,000 train / 1,000 test), so a test image never shows a training digit.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        seed: seeds the split and every random choice (angle, photo, crop, position).
        test_fraction: share of the digits held out for testing.
        limit: keep only the first ``limit`` digits of the split.
        size: side of the square images.
        digit_size: side of the pasted square (the paper: 16).
        max_degrees: rotations are uniform in ``[-max_degrees, max_degrees]``.
        copies: paste every digit this many times (on different backgrounds, angles, positions).
        return_parts: also keep ``dataset.parts`` for checks: ``backgrounds``, ``digits``
            (resized and rotated), ``offsets`` (the square's top-left corner), ``angles``,
            ``colours``, ``photos`` (index into :data:`PHOTOS`), ``corners`` (the crop's top-left
            corner in the resized photo) and ``source`` (the digits' MNIST-5k indices).

    Returns:
        An :class:`~wrapgrad_data.datasets.ImageDataset` whose ``masks["digit"]`` and
        ``masks["square"]`` are bool tensors ``(N, 1, size, size)``.
    """
    if not (isinstance(copies, int) and copies >= 1):
        raise WrapgradValueError(f"copies: expected a positive int, got {copies!r}")
    if not (isinstance(max_degrees, (int, float)) and 0 <= max_degrees <= 180):
        raise WrapgradValueError(f"max_degrees: expected a number in [0, 180], got {max_degrees!r}")
    if not digit_size <= size:
        raise WrapgradValueError(f"digit_size: expected at most size ({size}), got {digit_size!r}")
    images28, labels = mnist_arrays()
    idx = split_indices(len(labels), split, seed, test_fraction)
    idx = idx[: _check_limit(limit, len(idx))].repeat(copies)
    n = len(idx)
    salt = {"train": 1, "test": 2, "all": 3}[split]
    g = torch.Generator().manual_seed(int(seed) * 7919 + salt)
    angles = (torch.rand(n, generator=g) * 2.0 - 1.0) * max_degrees
    digits = F.interpolate(
        images28[idx], size=(digit_size, digit_size), mode="bilinear", antialias=True
    )
    digits = rotate(digits, angles).clamp(0.0, 1.0)
    photos = background_photos()
    which = torch.randint(len(photos), (n,), generator=g)
    u = torch.rand(n, 2, generator=g)
    backgrounds = torch.empty(n, 3, size, size)
    corners = torch.empty(n, 2, dtype=torch.long)
    for i in range(n):
        photo = photos[int(which[i])]
        top = int(u[i, 0] * (photo.shape[1] - size + 1))
        left = int(u[i, 1] * (photo.shape[2] - size + 1))
        corners[i] = torch.tensor([top, left])
        backgrounds[i] = photo[:, top : top + size, left : left + size]
    offsets = torch.randint(size - digit_size + 1, (n, 2), generator=g)
    images, digit_mask, square_mask, colours = compose(digits, backgrounds, offsets)
    ds = ImageDataset(
        images,
        labels[idx],
        num_classes=10,
        name="cmnist",
        masks={"digit": digit_mask, "square": square_mask},
    )
    if return_parts:
        ds.parts = {
            "backgrounds": backgrounds,
            "digits": digits,
            "offsets": offsets,
            "angles": angles,
            "colours": colours,
            "photos": which,
            "corners": corners,
            "source": idx,
        }
    return ds
