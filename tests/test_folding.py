"""wrapgrad.fold_batchnorm: eval-mode BatchNorm folded into the convolution before it, at every
forward pass, from the tensors the model holds then."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import wrapgrad
from wrapgrad.errors import WrapgradValueError
from wrapgrad.folding import FoldedBatchNorm, conv_bn


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from the identity (a fresh BatchNorm is
    the identity in eval mode, where folding would prove nothing)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            if m.track_running_stats:
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            if m.affine:
                with torch.no_grad():
                    m.weight.copy_(torch.randn(n, generator=g))
                    m.bias.copy_(torch.randn(n, generator=g))
    return model


def _resnet(in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    factory = wrapgrad.get_registry().get("model", "small_resnet").factory
    return _randomise_batchnorm(factory(in_channels=in_channels, num_classes=10)).eval()


class Mixed(nn.Module):
    """Conv1d/2d/3d, conv bias, affine=False, groups, reflect padding, a conv read twice (not
    foldable), a BatchNorm without running statistics (not foldable), a constant made in
    forward."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding=1)
        self.b1 = nn.BatchNorm1d(4, affine=False)
        self.c2 = nn.Conv2d(2, 6, 3, padding=1, groups=2, padding_mode="reflect", bias=False)
        self.b2 = nn.BatchNorm2d(6)
        self.c3 = nn.Conv3d(1, 3, 2)
        self.b3 = nn.BatchNorm3d(3)
        self.c4 = nn.Conv2d(6, 6, 1)
        self.b4 = nn.BatchNorm2d(6)
        self.c5 = nn.Conv2d(6, 6, 1)
        self.b5 = nn.BatchNorm2d(6, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.b1(self.c1(x.flatten(2)[..., :9])).sum((1, 2))
        y = torch.relu(self.b2(self.c2(x)))
        z = self.c4(y)
        y = self.b4(z) + z  # c4's output has two users: not folded
        y = self.b5(self.c5(y))  # batch statistics even in eval mode: not folded
        v = self.b3(self.c3(x[:, :1].unsqueeze(2).expand(-1, -1, 2, -1, -1))).sum((1, 2, 3, 4))
        return y.sum((1, 2, 3)) + a + v + torch.tensor(0.5)


def _mixed() -> nn.Module:
    torch.manual_seed(1)
    return _randomise_batchnorm(Mixed(), seed=1).eval()


def _grad(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


def test_the_folded_model_is_the_same_function_and_its_input_gradient() -> None:
    for model, x in ((_resnet(), torch.rand(5, 3, 16, 16)), (_mixed(), torch.rand(3, 2, 6, 6))):
        folded = wrapgrad.fold_batchnorm(model)
        out, g = _grad(model, x)
        fout, fg = _grad(folded, x)
        torch.testing.assert_close(fout, out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fg, g, rtol=1e-4, atol=1e-5)
    assert _mixed_pairs() == (("c1", "b1"), ("c2", "b2"), ("c3", "b3"))
    assert len(wrapgrad.fold_batchnorm(_resnet()).pairs) == 9


def _mixed_pairs() -> tuple[tuple[str, str], ...]:
    folded = wrapgrad.fold_batchnorm(_mixed())
    return tuple(sorted(folded.pairs))


def test_conv_bn_is_the_two_layers_on_a_hand_computed_case() -> None:
    conv = nn.Conv2d(1, 1, 1, bias=True)
    bn = nn.BatchNorm2d(1).eval()
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
    bn.running_mean.fill_(4.0)
    bn.running_var.fill_(4.0 - bn.eps)  # sqrt(var + eps) = 2
    x = torch.tensor([[[[5.0]]]])
    # (2*5 + 1 - 4) * 3 / 2 + 0.5 = 11
    assert conv_bn(x, conv, bn).item() == pytest.approx(11.0)
    assert bn(conv(x)).item() == pytest.approx(11.0)


def test_it_has_the_models_own_tensors_names_order_and_layers_and_changes_nothing() -> None:
    model = _resnet()
    before = copy.deepcopy(model.state_dict())
    folded = wrapgrad.fold_batchnorm(model)
    folded(torch.rand(2, 3, 8, 8))
    mixed = _mixed()
    attributes = set(vars(mixed))
    wrapgrad.fold_batchnorm(mixed)(torch.rand(2, 2, 6, 6))
    assert set(vars(mixed)) == attributes  # the tracer's constant is the folded module's
    assert [(n, id(p)) for n, p in folded.named_parameters()] == [
        (n, id(p)) for n, p in model.named_parameters()
    ]
    assert [(n, id(b)) for n, b in folded.named_buffers()] == [
        (n, id(b)) for n, b in model.named_buffers()
    ]
    assert [(n, type(m)) for n, m in folded.named_modules()][1:] == [
        (n, type(m)) for n, m in model.named_modules()
    ][1:]
    assert folded.model is model
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert wrapgrad.fold_batchnorm(folded) is folded


def test_weight_samples_reach_the_original_parameters_before_the_fold() -> None:
    # NoiseGrad's noise on W, gamma and beta, then the fold: functional_call on the folded
    # model with perturbed tensors equals the unfolded model with the same tensors.
    model = _resnet()
    folded = wrapgrad.fold_batchnorm(model)
    g = torch.Generator().manual_seed(3)
    noisy = {
        n: p.detach() * (1 + 0.3 * torch.randn(p.shape, generator=g))
        for n, p in model.named_parameters()
    }
    x = torch.rand(4, 3, 8, 8)
    want = torch.func.functional_call(model, noisy, (x,))
    got = torch.func.functional_call(folded, noisy, (x,))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, model(x), atol=1e-3)  # the samples were used
    # Through the engine: NoiseGrad and FusionGrad on the folded model give the model's maps.
    y = torch.tensor([0, 1, 2, 3])
    for enhancer, options in (
        ("noisegrad", {"sigma": 0.2, "n_samples": 3}),
        ("fusiongrad", {"sigma": 0.1, "noise_level": 0.1, "n_models": 2, "n_samples": 2}),
    ):
        maps = [
            wrapgrad.wrap(m, "saliency", enhancer=enhancer, seed=5, **options)(x, target=y)
            for m in (model, folded)
        ]
        torch.testing.assert_close(maps[1], maps[0], rtol=1e-4, atol=1e-6)


def test_a_batchnorm_in_training_mode_runs_unfolded_with_batch_statistics() -> None:
    model = _resnet()
    model.layer1.bn1.train()  # batch statistics, running statistics updated
    twin = copy.deepcopy(model)
    folded = wrapgrad.fold_batchnorm(model)
    x = torch.rand(6, 3, 8, 8)
    torch.testing.assert_close(folded(x), twin(x))
    torch.testing.assert_close(model.layer1.bn1.running_mean, twin.layer1.bn1.running_mean)
    assert not torch.equal(model.layer1.bn1.running_mean, _resnet().layer1.bn1.running_mean)


def test_a_hooked_layer_runs_unfolded_so_layer_methods_see_it() -> None:
    from captum.attr import LayerGradCam

    model = _resnet()
    folded = wrapgrad.fold_batchnorm(model)
    x = torch.rand(3, 3, 8, 8)
    seen: list[tuple[int, ...]] = []
    handle = model.layer3.conv2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        folded(x)
    finally:
        handle.remove()
    assert seen == [(3, 64, 2, 2)]
    for layer in ("conv2", "bn2"):
        want = LayerGradCam(model, getattr(model.layer3, layer)).attribute(x, target=1)
        got = LayerGradCam(folded, getattr(folded.layer3, layer)).attribute(x, target=1)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_copies_for_workers_fold_their_own_layers() -> None:
    model = _resnet()
    folded = wrapgrad.fold_batchnorm(model)
    twin = copy.deepcopy(folded)
    assert twin._forward is folded._forward  # not traced again (torch.fx patches all threads)
    assert twin.model is not model
    assert twin.layer1 is twin.model.layer1
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        twin.layer1.conv1.weight.mul_(2)
    torch.testing.assert_close(folded(x), model(x))
    torch.testing.assert_close(twin(x), twin.model(x))
    assert not torch.allclose(twin(x), model(x))


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.sum() > 0 else x


def test_untraceable_models_and_non_modules_are_refused_clearly() -> None:
    branching = Branching().eval()
    before = copy.deepcopy(branching.state_dict())
    attributes = {n: set(vars(m)) for n, m in branching.named_modules()}
    with pytest.raises(WrapgradValueError, match=r"model: fold_batchnorm needs .*Branching"):
        wrapgrad.fold_batchnorm(branching)
    # the failed trace left the model as it was
    assert all(torch.equal(before[k], v) for k, v in branching.state_dict().items())
    assert {n: set(vars(m)) for n, m in branching.named_modules()} == attributes
    assert not any(m.training for m in branching.modules())
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module, got int"):
        FoldedBatchNorm(3)  # type: ignore[arg-type]


def test_a_mode_change_runs_the_model_as_it_is() -> None:
    model = _resnet()
    folded = wrapgrad.fold_batchnorm(model)
    x = torch.rand(4, 3, 8, 8)
    model.train()  # batch statistics everywhere, and forward code may read self.training
    twin = copy.deepcopy(model)
    torch.testing.assert_close(folded(x), twin(x))
    torch.testing.assert_close(model.stem[1].running_mean, twin.stem[1].running_mean)
    model.eval()
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


class Block(nn.Module):
    """A non-leaf module: the trace goes through it; its forward writes on self."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = x
        return torch.relu(self.bn(self.conv(x)))


class WithBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.shift = torch.full((1,), 0.25)  # a plain tensor attribute, not a buffer
        self.register_buffer("scratch", torch.zeros(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x).sum((1, 2, 3)) + self.shift


def test_hooks_on_blocks_and_the_root_fire_and_tracing_leaves_no_trace() -> None:
    from captum.attr import LayerGradCam

    torch.manual_seed(2)
    model = _randomise_batchnorm(WithBlock()).eval()
    model(torch.rand(1, 3, 5, 5))
    attributes = {n: set(vars(m)) for n, m in model.named_modules()}
    folded = wrapgrad.fold_batchnorm(model)
    assert folded.pairs == (("block.conv", "block.bn"),)
    assert {n: set(vars(m)) for n, m in model.named_modules()} == attributes
    assert isinstance(model.block.last, torch.Tensor)  # not the tracer's proxy
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    assert list(folded.state_dict()) == list(model.state_dict())  # "scratch" not persistent
    # A hook set at fold time is not baked into the trace: removed, it is gone.
    handle = model.block.register_forward_hook(lambda m, i, o: o * 0)
    zero = wrapgrad.fold_batchnorm(model)
    assert torch.equal(zero(x), model.shift.expand(2))  # while set, it fires
    handle.remove()
    torch.testing.assert_close(zero(x), model(x), rtol=1e-5, atol=1e-5)
    # A pre-hook on the root, and Grad-CAM on a block (hooks set after folding), fire.
    handle = model.register_forward_pre_hook(lambda m, i: (i[0] * 2,))
    try:
        torch.testing.assert_close(folded(x), model(x))
    finally:
        handle.remove()
    resnet = _resnet()
    folded = wrapgrad.fold_batchnorm(resnet)
    x = torch.rand(3, 3, 8, 8)
    want = LayerGradCam(resnet, resnet.layer3).attribute(x, target=1)
    got = LayerGradCam(folded, folded.layer3).attribute(x, target=1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_only_a_conv_and_batchnorm_of_one_rank_fold_and_only_on_batches() -> None:
    torch.manual_seed(3)
    model = _randomise_batchnorm(nn.Sequential(nn.Conv1d(2, 4, 1), nn.BatchNorm1d(4))).eval()
    folded = wrapgrad.fold_batchnorm(model)
    assert folded.pairs == (("0", "1"),)
    unbatched = torch.rand(2, 4)  # BatchNorm1d normalises its dim 0 here, not the channels
    torch.testing.assert_close(folded(unbatched), model(unbatched))
    mixed = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm1d(4)).eval()
    assert wrapgrad.fold_batchnorm(mixed).pairs == ()


def test_a_folded_model_inside_a_model_folds_its_own_layers() -> None:
    torch.manual_seed(4)
    inner = _randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).eval()
    outer = nn.Sequential(wrapgrad.fold_batchnorm(inner), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    outer = _randomise_batchnorm(outer, seed=5).eval()
    folded = wrapgrad.fold_batchnorm(outer)
    assert folded.pairs == (("1", "2"),)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(folded(x), outer(x), rtol=1e-5, atol=1e-5)


def test_it_pickles_and_the_copy_folds_its_own_model() -> None:
    import pickle

    model = _resnet()
    folded = wrapgrad.fold_batchnorm(model)
    again = pickle.loads(pickle.dumps(folded))
    assert again.pairs == folded.pairs
    assert again.layer1 is again.model.layer1
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(again(x), model(x), rtol=1e-5, atol=1e-5)


def _folding_tables(weights: Path) -> dict:
    from tests.test_distributed_pipeline import tables

    raw = tables(weights)
    raw["model"]["name"] = "small_resnet"
    del raw["calibration"]  # an untrained model: fixed levels
    raw["explain"]["enhancers"][2]["options"]["sigma"] = 0.2
    return raw


def _folded_rank(rank: int, folder: Path, out: str = "two") -> None:
    from wrapgrad_pipeline import Pipeline

    raw = _folding_tables(folder / "weights.pt")
    raw["model"]["fold_batchnorm"] = True
    run = Pipeline.from_dict(raw).run(folder / out, progress=False)
    torch.save(run.results["scores"], folder / out / f"scores{rank}.pt")


def test_a_folded_model_reaches_every_rank_of_a_distributed_run(tmp_path: Path) -> None:
    # rank 0's model step is broadcast to the other ranks, pickled: the traced code is not
    # picklable, so unpickling traces the model again
    from tests._ranks import run_ranks
    from tests.test_distributed_pipeline import same

    torch.save(_resnet(in_channels=1).state_dict(), tmp_path / "weights.pt")
    _folded_rank(0, tmp_path, "one")  # one process
    run_ranks(_folded_rank, 2, tmp_path, timeout=240)
    single = torch.load(tmp_path / "one" / "scores0.pt", weights_only=False)
    for rank in range(2):
        same(torch.load(tmp_path / "two" / f"scores{rank}.pt", weights_only=False), single)


def test_a_pipeline_folds_on_request_with_the_unfolded_accuracy(tmp_path: Path) -> None:
    from wrapgrad_pipeline import Pipeline

    torch.save(_resnet(in_channels=1).state_dict(), tmp_path / "weights.pt")
    raw = _folding_tables(tmp_path / "weights.pt")
    plain = Pipeline.from_dict(raw).run(tmp_path / "plain", progress=False)
    raw["model"]["fold_batchnorm"] = True
    folded = Pipeline.from_dict(raw).run(tmp_path / "folded", progress=False, workers=2)
    (entry,) = folded.context.models.values()
    assert isinstance(entry.model, FoldedBatchNorm)
    assert entry.info["folded_batchnorm"] == 9
    assert entry.info["test_accuracy"] == plain.context.models[entry.label].info["test_accuracy"]
    for method, variants in plain.context.explanations.items():
        for v, ex in variants.items():
            other = folded.context.explanations[method][v]
            for a, b in zip([ex, *ex.replicates], [other, *other.replicates], strict=True):
                # per sample, relative to its largest attribution: float rounding, except
                # where a ReLU input lay within rounding of 0 in one draw (measured: one of 14
                # SmoothGrad maps, 1 % there)
                d = (a.raw - b.raw).abs().amax(dim=(1, 2, 3)) / a.raw.abs().amax(dim=(1, 2, 3))
                assert int((d > 1e-5).sum()) <= 1, (v, d)
                assert float(d.max()) < 0.05, (v, d)
    raw["model"]["fold_batchnorm"] = 1
    with pytest.raises(
        wrapgrad.WrapgradError, match=r"\[model\]\.fold_batchnorm: expected true or false"
    ):
        Pipeline.from_dict(raw)
