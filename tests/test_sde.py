"""wrapgrad.to_sde: conversion, sigma = 0 bit for bit, seeds, the user's model never changed,
Monte-Carlo inference, bad input (Jha et al. 2022 neural SDEs)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import wrapgrad
from wrapgrad.errors import UnknownNameError, WrapgradError
from wrapgrad.guard import ModelSnapshot
from wrapgrad.registry import get_registry
from wrapgrad.sde import NeuralSDE, StochasticBlock


def make_resnet(seed: int = 0, in_channels: int = 1) -> nn.Module:
    """The embedded small_resnet, reached through the registry, with seeded weights."""
    factory = get_registry().get("model", "small_resnet").factory
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = factory(in_channels=in_channels, num_classes=5, width=4)
        for m in model.modules():  # non-trivial BatchNorm affine parameters and statistics
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)
    return model


def batch(n: int = 6, seed: int = 1, channels: int = 1) -> torch.Tensor:
    return torch.randn(n, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


# -- torchvision-like blocks, written here as torchvision writes them -----------------------------
class TVBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TVBottleneck(nn.Module):
    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cin, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + x)


class TVNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.layer1 = nn.Sequential(TVBasicBlock(4, 4), TVBottleneck(4, 2))
        self.layer2 = nn.Sequential(TVBasicBlock(4, 8, stride=2))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class Residual(nn.Module):
    """x + tanh(W x + b): a residual block of vectors, with no conv1/conv2 to be found by."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.lin(x))


class MLP(nn.Module):
    def __init__(self, d: int = 3, depth: int = 3) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Residual(d) for _ in range(depth)])
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


# -- conversion ------------------------------------------------------------------------------------
def test_finds_the_blocks_of_the_embedded_small_resnet() -> None:
    sde = wrapgrad.to_sde(make_resnet(), seed=0)
    assert isinstance(sde, NeuralSDE)
    assert sde.blocks == ("layer1", "layer2", "layer3")
    assert sde.dt == pytest.approx(1 / 3)  # the unit horizon over three blocks
    assert [sde.net.get_submodule(n).index for n in sde.blocks] == [0, 1, 2]
    assert all(isinstance(sde.net.get_submodule(n), StochasticBlock) for n in sde.blocks)
    assert sde.sigma == 0.5  # the paper's noise constant


def test_finds_torchvision_like_basic_and_bottleneck_blocks_outermost_only() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TVNet()
    sde = wrapgrad.to_sde(model, seed=0, dt=1.0)
    assert sde.blocks == ("layer1.0", "layer1.1", "layer2.0")  # not the downsample inside
    assert sde.dt == 1.0


def test_marked_blocks_by_name_and_by_predicate() -> None:
    model = MLP()
    by_name = wrapgrad.to_sde(model, blocks=["blocks.2", "blocks.0"], seed=0)
    assert by_name.blocks == ("blocks.0", "blocks.2")  # in the network's order
    assert by_name.dt == pytest.approx(0.5)
    by_rule = wrapgrad.to_sde(model, blocks=lambda name, m: isinstance(m, Residual), seed=0)
    assert by_rule.blocks == ("blocks.0", "blocks.1", "blocks.2")
    assert wrapgrad.to_sde(model, blocks="blocks.1", seed=0).blocks == ("blocks.1",)


def test_to_plain_is_the_users_architecture_with_the_same_values() -> None:
    model = make_resnet()
    sde = wrapgrad.to_sde(model, seed=0)
    plain = sde.to_plain()
    assert type(plain) is type(model)
    theirs, ours = model.state_dict(), plain.state_dict()
    assert list(theirs) == list(ours)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    # Copies, not views of the user's storage.
    user_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not user_ptrs & {p.data_ptr() for p in sde.parameters()}
    assert sum(p.numel() for p in sde.parameters()) == sum(p.numel() for p in model.parameters())


# -- sigma = 0 and inference without noise are the plain network, bit for bit ------------------------
@pytest.mark.parametrize("noise", ["brownian", "attribution_shaped"])
def test_sigma_zero_is_the_plain_resnet_bit_for_bit_in_train_and_eval(noise: str) -> None:
    model = make_resnet()
    reference = copy.deepcopy(model)
    sde = wrapgrad.to_sde(model, sigma=0.0, noise=noise, seed=0)
    if noise == "attribution_shaped":
        sde.refresh_guide(batch())  # a guide exists, and still no noise
    x = batch()
    sde.train()
    reference.train()
    for _ in range(2):  # BatchNorm batch statistics and running-statistics updates alike
        assert torch.equal(sde(x), reference(x))
    plain = sde.to_plain()
    for name, value in reference.state_dict().items():
        assert torch.equal(plain.state_dict()[name], value), name
    sde.eval()
    reference.eval()
    assert torch.equal(sde(x), reference(x))


def test_eval_mode_has_no_noise_by_default() -> None:
    model = make_resnet().eval()
    sde = wrapgrad.to_sde(model, sigma=0.9, seed=0)
    assert not sde.training  # the user's mode is kept
    state = sde.rng_state()
    assert torch.equal(sde(batch()), model(batch()))
    assert torch.equal(sde.rng_state(), state)  # nothing drawn
    sde.train()
    assert not torch.equal(sde(batch()), model.train()(batch()))


# -- seeds and the generator -----------------------------------------------------------------------
def test_same_seed_same_draws_different_seeds_differ_global_rng_untouched() -> None:
    model = make_resnet().train()
    x = batch()
    before = torch.get_rng_state()
    a = wrapgrad.to_sde(model, seed=3)
    b = wrapgrad.to_sde(model, seed=3)
    c = wrapgrad.to_sde(model, seed=4)
    a1, a2 = a(x), a(x)
    b1, b2 = b(x), b(x)
    assert torch.equal(a1, b1)
    assert torch.equal(a2, b2)
    assert not torch.equal(a1, a2)  # the generator moves on
    assert not torch.equal(a1, c(x))
    assert torch.equal(torch.get_rng_state(), before)


def test_unseeded_models_record_a_fresh_seed() -> None:
    model = make_resnet()
    a, b = wrapgrad.to_sde(model), wrapgrad.to_sde(model)
    assert a.seed != b.seed
    again = wrapgrad.to_sde(model, seed=a.seed).train()
    x = batch()
    assert torch.equal(a.train()(x), again(x))


def test_generator_state_travels_in_the_state_dict_and_the_accessor() -> None:
    model = make_resnet().train()
    x = batch()
    first = wrapgrad.to_sde(model, seed=7)
    first(x)  # advance
    saved = copy.deepcopy(first.state_dict())
    state = first.rng_state()
    expected = first(x)
    resumed = wrapgrad.to_sde(model, seed=99)
    resumed.load_state_dict(saved)
    assert torch.equal(resumed(x), expected)  # resume == uninterrupted
    assert (resumed.seed, resumed.inference_seed) == (7, 8)  # the MC draws come along too
    again = wrapgrad.to_sde(model, seed=99)
    again.load_state_dict(saved)
    again.set_rng_state(state)
    assert torch.equal(again(x), expected)


# -- the user's model is never changed ----------------------------------------------------------------
def test_the_users_model_is_unchanged_by_conversion_training_and_explanation() -> None:
    model = make_resnet()
    model.train()
    x, y = batch(8), torch.arange(8) % 5
    model(x).sum().backward()  # the user's model has gradients of its own
    snapshot = ModelSnapshot(model)
    sde = wrapgrad.to_sde(model, seed=0)
    assert all(p.grad is None for p in sde.parameters())
    assert snapshot.differences() == []
    start = {k: v.clone() for k, v in sde.state_dict().items() if k != "_extra_state"}
    optimiser = torch.optim.Adam(sde.parameters(), lr=1e-2)
    for _ in range(3):
        optimiser.zero_grad()
        nn.functional.cross_entropy(sde(x), y).backward()
        optimiser.step()
    assert snapshot.differences() == []
    moved = [k for k, v in sde.state_dict().items() if k in start and not torch.equal(v, start[k])]
    assert any(k.endswith("conv1.weight") for k in moved)  # it did train, on its own copies
    sde.eval()
    sde_snapshot = ModelSnapshot(sde)
    for method in ("saliency", "integrated_gradients"):
        maps = wrapgrad.wrap(sde, method, guard="verify")(x, target=y)
        assert maps.shape == x.shape
    assert snapshot.differences() == []
    assert sde_snapshot.differences() == []


def test_the_guide_model_is_a_frozen_copy_outside_the_parameters() -> None:
    model = make_resnet().train()
    sde = wrapgrad.to_sde(model, noise="attribution_shaped", seed=0)
    sde.refresh_guide(batch(4))
    guide = sde.guide_model
    assert guide is not None
    assert not guide.training
    assert all(not p.requires_grad for p in guide.parameters())
    assert not {id(p) for p in guide.parameters()} & {id(p) for p in sde.parameters()}
    assert not any(k.startswith("_guide") for k in sde.state_dict())
    frozen = {k: v.clone() for k, v in guide.state_dict().items()}
    optimiser = torch.optim.SGD(sde.parameters(), lr=0.1)
    optimiser.zero_grad()
    sde(batch()).sum().backward()
    optimiser.step()
    assert all(torch.equal(v, frozen[k]) for k, v in guide.state_dict().items())


# -- Monte-Carlo inference ----------------------------------------------------------------------------
def test_monte_carlo_inference_averages_softmax_over_fixed_draws() -> None:
    model = make_resnet().eval()
    sde = wrapgrad.to_sde(model, sigma=0.8, seed=0, mc_samples=6)
    x = batch(5)
    out = sde(x)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(5), atol=1e-5)  # log-probabilities
    assert torch.equal(sde(x), out)  # the same draws every call: one deterministic function
    assert torch.allclose(sde(x[2:3]), out[2:3], atol=1e-5)  # whatever batch an example is in
    assert not torch.allclose(out, torch.log_softmax(model(x), dim=1), atol=1e-3)
    state = sde.rng_state()
    sde(x)
    assert torch.equal(sde.rng_state(), state)  # inference draws leave the training stream alone
    other = wrapgrad.to_sde(model, sigma=0.8, seed=0, mc_samples=6, inference_seed=123)
    assert not torch.allclose(other(x), out, atol=1e-4)
    sde.mc_samples = 0
    assert torch.equal(sde(x), model(x))


def test_monte_carlo_output_is_the_mean_of_the_member_softmaxes() -> None:
    model = make_resnet().eval()
    sde = wrapgrad.to_sde(model, sigma=0.8, seed=0, mc_samples=3)
    x = batch(4)
    # Members through the public step: each block adds one draw shared by the batch.
    recorded: list[torch.Tensor] = []
    handle = sde.net.register_forward_hook(lambda mod, inp, out: recorded.append(out.detach()))
    averaged = sde(x)
    handle.remove()
    assert len(recorded) == 3
    expected = torch.stack([torch.softmax(z, dim=1) for z in recorded]).mean(dim=0)
    assert torch.allclose(averaged.exp(), expected, atol=1e-6)
    assert not torch.equal(recorded[0], recorded[1])


# -- bad input --------------------------------------------------------------------------------------
class NoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("model_fn", "kwargs", "argument", "words"),
    [
        (NoBlocks, {}, "model", "found no residual block"),
        (make_resnet, {"sigma": -0.1}, "sigma", ">= 0"),
        (make_resnet, {"dt": -1.0}, "dt", "> 0"),
        (make_resnet, {"dt": 0.0}, "dt", "> 0"),
        (make_resnet, {"blocks": ["layer9"]}, "blocks", "unknown module"),
        (make_resnet, {"blocks": ["layer1", "layer1.conv1"]}, "blocks", "lies inside"),
        (make_resnet, {"blocks": lambda n, m: False}, "blocks", "matched no"),
        (make_resnet, {"noise": "input_gaussian"}, "noise", "input perturber"),
        (make_resnet, {"noise": "brownain"}, "noise", "brownian"),
        (make_resnet, {"sigmaa": 0.1}, "options", "sigma"),
        (make_resnet, {"mc_samples": -1}, "mc_samples", ">= 0"),
        (
            make_resnet,
            {"outlier_quantile": 1.5, "noise": "attribution_shaped"},
            "outlier_quantile",
            "(0.0, 1.0]",
        ),
        (make_resnet, {"guide_method": "salincy"}, "guide_method", "saliency"),
    ],
)
def test_bad_conversion_arguments_name_the_argument_and_leave_the_model(
    model_fn, kwargs, argument: str, words: str
) -> None:
    model = model_fn()
    snapshot = ModelSnapshot(model)
    with pytest.raises(WrapgradError, match=argument) as info:
        wrapgrad.to_sde(model, seed=0, **kwargs)
    assert str(info.value).startswith(argument)
    assert words in str(info.value)
    assert snapshot.differences() == []


def test_no_block_message_says_what_was_looked_for() -> None:
    with pytest.raises(WrapgradError) as info:
        wrapgrad.to_sde(NoBlocks())
    assert "conv1" in str(info.value)
    assert "shortcut" in str(info.value)
    assert "blocks=" in str(info.value)


def test_a_noise_object_and_its_checks() -> None:
    from wrapgrad.protocols import StatePerturber

    spec = get_registry().get("perturber", "brownian")
    noise = spec.factory(sigma=0.2)
    assert isinstance(noise, StatePerturber)
    sde = wrapgrad.to_sde(make_resnet(), noise=noise, seed=0)
    assert sde.perturber is noise
    assert sde.sigma == 0.2
    with pytest.raises(WrapgradError, match=r"^sigma"):
        wrapgrad.to_sde(make_resnet(), sigma=0.3, noise=noise)
    with pytest.raises(WrapgradError, match=r"^noise"):
        wrapgrad.to_sde(make_resnet(), noise=object())
    with pytest.raises(UnknownNameError):
        wrapgrad.to_sde(make_resnet(), noise="nope")


@pytest.mark.parametrize("problem", ["shape", "nan", "inf"])
def test_bad_guide_maps_raise_naming_guide_and_change_nothing(problem: str) -> None:
    model = make_resnet().train()
    snapshot = ModelSnapshot(model)
    sde = wrapgrad.to_sde(model, noise="attribution_shaped", seed=0)
    sde_snapshot = ModelSnapshot(sde)
    state = sde.rng_state()
    x = batch(4)
    maps = torch.ones_like(x)
    if problem == "shape":
        sde.set_guide(torch.ones(4, 1, 8, 8))
        with pytest.raises(WrapgradError, match=r"^guide: expected maps of the inputs' shape"):
            sde(x)
        with pytest.raises(WrapgradError, match=r"^guide"):
            sde.add_guide(x, torch.ones(4, 1, 8, 8))
    else:
        maps[1, 0, 2, 3] = float("nan") if problem == "nan" else float("inf")
        with pytest.raises(WrapgradError, match=r"^guide: expected finite values"):
            sde.set_guide(maps)
        with pytest.raises(WrapgradError, match=r"^guide"):
            sde.add_guide(x, maps)
    assert torch.equal(sde.rng_state(), state)
    assert sde_snapshot.differences() == []
    assert snapshot.differences() == []
