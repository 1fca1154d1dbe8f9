"""Reference models, the training loop and the weights cache."""

from __future__ import annotations

import json

import pytest
import torch
import wrapgrad_data
from wrapgrad_data import get_recipe, pretrained, train
from wrapgrad_data.cache import cache_dir, cache_paths

from wrapgrad.errors import WrapgradError, WrapgradValueError, WrapgradWarning
from wrapgrad.registry import get_registry

QUICK = {"epochs": 1, "dataset_options": {"limit": 300}}


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        ("small_cnn", (1, 28, 28)),
        ("small_cnn", (3, 32, 32)),
        ("small_cnn", (1, 8, 8)),
        ("small_resnet", (3, 32, 32)),
        ("small_resnet", (1, 8, 8)),
    ],
)
def test_models_map_images_to_logits(model, shape):
    net = get_registry().get("model", model).factory(in_channels=shape[0], num_classes=7)
    out = net(torch.rand(5, *shape))
    assert out.shape == (5, 7)


def test_small_resnet_with_two_blocks_is_the_stem_then_the_downsampling_blocks():
    """``blocks=2`` leaves out the full-resolution first block: its forward is stem -> layer2 ->
    layer3 -> pool -> fc of the same layers, the other layers keep their names, and only the
    first block's parameters are gone."""
    factory = get_registry().get("model", "small_resnet").factory
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        two = factory(in_channels=3, num_classes=10, blocks=2).eval()
        three = factory(in_channels=3, num_classes=10).eval()
    x = torch.rand(4, 3, 32, 32)
    by_hand = two.fc(torch.flatten(two.pool(two.layer3(two.layer2(two.stem(x)))), 1))
    torch.testing.assert_close(two(x), by_hand, rtol=0, atol=0)
    names2, names3 = set(two.state_dict()), set(three.state_dict())
    assert names2 == {k for k in names3 if not k.startswith("layer1.")}
    assert any(k.startswith("layer1.") for k in names3)
    assert sum(p.numel() for p in two.parameters()) == 73_370
    assert sum(p.numel() for p in three.parameters()) == 78_042
    with pytest.raises(WrapgradValueError, match="blocks: expected one of 2, 3, got 1"):
        factory(blocks=1)
    with pytest.raises(WrapgradError, match=r"blocks: expected the int 2 or 3, got 2\.0"):
        factory(blocks=2.0)  # equal to 2, but a recipe with it would be another cache entry
    # A recipe with it is another cache entry.
    cmnist = get_recipe("small_resnet", "cmnist")
    assert get_recipe("small_resnet", "cmnist", model_options={"blocks": 2}).key() != cmnist.key()


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WRAPGRAD_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("WRAPGRAD_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "wrapgrad")


def test_recipe_key_changes_with_the_recipe():
    base = get_recipe("small_cnn", "mnist")
    assert base.key() == get_recipe("small_cnn", "mnist").key()
    assert base.key() != get_recipe("small_cnn", "mnist", epochs=base.epochs + 1).key()
    with pytest.raises(WrapgradValueError, match="epoch"):
        get_recipe("small_cnn", "mnist", epoch=3)


def test_training_learns_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    result = train("small_cnn", "digits8x8", seed=0, epochs=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert result.test_accuracy > 0.8  # chance is 0.1
    assert not result.model.training
    assert result.seconds > 0


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WRAPGRAD_CACHE", str(tmp_path))
    return tmp_path


def test_cached_model_reloads_identically_without_training(cache, monkeypatch):
    first = pretrained("small_cnn", "digits8x8", seed=0, progress=False, **QUICK)
    weights, record = cache_paths("small_cnn", "digits8x8", 0, **QUICK)
    assert weights.exists()
    meta = json.loads(record.read_text())
    assert meta["seed"] == 0
    assert 0.0 <= meta["test_accuracy"] <= 1.0

    def no_training(*args, **kwargs):
        raise AssertionError("a valid cache entry must not be retrained")

    monkeypatch.setattr(wrapgrad_data.cache, "train", no_training)
    second = pretrained("small_cnn", "digits8x8", seed=0, progress=False, **QUICK)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not second.training
    # Another seed is another entry.
    assert cache_paths("small_cnn", "digits8x8", 1, **QUICK)[0] != weights


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "bad_record"])
def test_corrupted_cache_file_is_rebuilt_not_trusted(cache, damage):
    first = pretrained("small_cnn", "digits8x8", seed=0, progress=False, **QUICK)
    weights, record = cache_paths("small_cnn", "digits8x8", 0, **QUICK)
    blob = bytearray(weights.read_bytes())
    if damage == "flip_byte":
        blob[len(blob) // 2] ^= 0xFF  # still loadable maybe, but the checksum catches it
        weights.write_bytes(bytes(blob))
    elif damage == "truncate":
        weights.write_bytes(bytes(blob[: len(blob) // 3]))
    else:
        record.write_text("{not json")
    with pytest.warns(WrapgradWarning, match="cannot be trusted"):
        rebuilt = pretrained("small_cnn", "digits8x8", seed=0, progress=False, **QUICK)
    # Training is deterministic: the rebuilt weights equal the first ones, and the entry is sound.
    a, b = first.state_dict(), rebuilt.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads(record.read_text())
    import hashlib

    assert meta["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


class _Evil:
    """Unpickling it would create a directory: proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.makedirs, (self.marker,))


def test_cache_never_runs_pickled_code_even_with_a_matching_checksum(cache):
    import hashlib

    first = pretrained("small_cnn", "digits8x8", seed=0, progress=False, **QUICK)
    weights, record = cache_paths("small_cnn", "digits8x8", 0, **QUICK)
    marker = cache / "pwned"
    torch.save({"payload": _Evil(str(marker))}, weights)
    meta = json.loads(record.read_text())
    meta["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # a forged record
    record.write_text(json.dumps(meta))
    with pytest.warns(WrapgradWarning, match="unloadable weights"):
        rebuilt = pretrained("small_cnn", "digits8x8", seed=0, progress=False, **QUICK)
    assert not marker.exists()  # weights_only=True refused the payload
    a, b = first.state_dict(), rebuilt.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_change_is_another_cache_entry(cache):
    a = cache_paths("small_cnn", "digits8x8", 0, **QUICK)[0]
    b = cache_paths("small_cnn", "digits8x8", 0, epochs=2, dataset_options={"limit": 300})[0]
    assert a != b
    assert a.parent == b.parent == cache / "models"


@pytest.mark.parametrize(
    ("model_name", "channels_last"), [("small_cnn", False), ("small_resnet", True)]
)
def test_recipe_training_runs_on_the_one_loop_and_matches_the_recipe_by_hand(
    monkeypatch, model_name: str, channels_last: bool
):
    """The recipe (AdamW, one-cycle schedule, cross-entropy, shuffles from seed + 1) is
    wrapgrad.train with the natural objective: the same weights, bit for bit, as the recipe
    written out by hand, so the cached weights stay valid (LOOP_VERSION unchanged). A
    ``channels_last`` recipe trains the model in that format and returns it contiguous."""
    import torch.nn.functional as F
    import wrapgrad_data.training as recipe_training

    calls = []
    import wrapgrad.training

    original = wrapgrad.training.train

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(wrapgrad.training, "train", spy)
    result = train(
        model_name,
        "digits8x8",
        seed=2,
        epochs=2,
        limit=96,
        progress=False,
        channels_last=channels_last,
    )
    assert calls[0]["optimizer"] == "adamw"
    assert calls[0]["scheduler"] == "one_cycle"

    recipe = get_recipe(
        model_name,
        "digits8x8",
        epochs=2,
        dataset_options={"limit": 96},
        channels_last=channels_last,
    )
    data = get_registry().get("dataset", "digits8x8").factory(split="train", limit=96)
    x, y = data.inputs, data.labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = recipe_training.build_model(recipe, in_channels=1, num_classes=10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(3)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = (len(y) + recipe.batch_size - 1) // recipe.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=2 * steps)
    model.train()
    for _ in range(2):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), recipe.batch_size):
            b = perm[i : i + recipe.batch_size]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    a, b = result.model.state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(t.is_contiguous() for t in a.values())
    assert recipe_training.LOOP_VERSION == 1


def test_recipe_keys_without_channels_last_are_those_from_before_the_field():
    """Adding ``Recipe.channels_last`` kept every other recipe's cache key (cached weights stay
    valid); setting it makes another entry."""
    assert get_recipe("small_cnn", "mnist").key() == "9dca89eb6083b9df"
    assert get_recipe("small_resnet", "digits8x8").key() == "a2c5cee87d9bf575"
    cmnist = get_recipe("small_resnet", "cmnist")
    assert cmnist.key() == "bced16a20f9bbc3b"  # the demo's model
    assert get_recipe("small_resnet", "cmnist", channels_last=True).key() != cmnist.key()
    with pytest.raises(WrapgradError, match="channels_last"):
        get_recipe("small_resnet", "cmnist", channels_last=1)  # not a bool: no other cache key
