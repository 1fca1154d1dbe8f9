"""The plugin registry: entry points, built-ins, broken plugins, conflicts, suggestions."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import wrapgrad
from wrapgrad.errors import (
    PluginConflictError,
    PluginLoadError,
    UnavailableError,
    UnknownNameError,
    WrapgradWarning,
)
from wrapgrad.records import EnhancerSpec, ExplainerSpec, ExplainerTraits, MetricSpec
from wrapgrad.registry import Registry

ENHANCER_PLUGIN = """
    import torch
    from wrapgrad import hookimpl
    from wrapgrad.records import EnhancerSpec

    class Shift:
        '''Explains inputs shifted by a constant: a tiny but real enhancer.'''
        def __init__(self, shift=0.0, repeats=1):
            self.shift, self.repeats = shift, repeats
        def __call__(self, explainer, model, inputs, target=None, **kw):
            maps = [explainer(model, inputs + self.shift, target, **kw) for _ in range(self.repeats)]
            return torch.stack(maps).mean(0)

    @hookimpl
    def wrapgrad_enhancers():
        yield EnhancerSpec(name="{name}", factory=Shift, summary="shifted inputs")
"""


def test_builtins_are_registered_through_entry_points(registry: Registry) -> None:
    rows = [r for r in wrapgrad.plugins() if r.kind == "explainer"]
    names = {r.name for r in rows}
    assert {"saliency", "integrated_gradients", "deep_lift", "layer_grad_cam", "lime"} <= names
    row = next(r for r in rows if r.name == "saliency")
    assert row.plugin == "captum"
    assert row.distribution == "wrapgrad"
    assert row.version == wrapgrad.__version__


def test_third_party_plugin_is_discovered_via_entry_point(install_plugin, cnn, images) -> None:
    install_plugin("wg-shift", "wg_shift", ENHANCER_PLUGIN.format(name="shift"), version="1.2.3")
    reg = Registry()
    row = next(r for r in reg.plugins() if r.name == "shift")
    assert (row.kind, row.plugin, row.distribution, row.version) == (
        "enhancer",
        "wg_shift",
        "wg-shift",
        "1.2.3",
    )
    # The enhancer is reachable from wrap(), with its options routed by its signature.
    explain = wrapgrad.wrap(cnn, "saliency", enhancer="shift", shift=0.5, repeats=2, registry=reg)
    got = explain(images, target=1, abs=False)
    want = wrapgrad.wrap(cnn, "saliency", registry=reg)(images + 0.5, target=1, abs=False)
    torch.testing.assert_close(got, want)


def test_disable_autoload_loads_builtins_only(install_plugin, monkeypatch) -> None:
    install_plugin("wg-shift", "wg_shift", ENHANCER_PLUGIN.format(name="shift"))
    monkeypatch.setenv("WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = Registry()
    assert "shift" not in reg.names("enhancer")
    assert "saliency" in reg.names("explainer")
    monkeypatch.delenv("WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD")
    assert "shift" in Registry().names("enhancer")


def test_broken_plugin_is_reported_by_name_and_others_still_load(install_plugin) -> None:
    install_plugin("wg-broken", "wg_broken", "raise RuntimeError('kaput on import')")
    install_plugin("wg-shift", "wg_shift", ENHANCER_PLUGIN.format(name="shift"))
    reg = Registry()
    with pytest.warns(WrapgradWarning, match=r"wg_broken.*wg-broken.*kaput on import"):
        names = reg.names("enhancer")
    assert "shift" in names
    assert "saliency" in reg.names("explainer")
    broken = [r for r in reg.plugins() if r.broken]
    assert [(r.name, r.distribution) for r in broken] == [("wg_broken", "wg-broken")]
    assert "kaput on import" in broken[0].error


def test_strict_mode_reraises(install_plugin) -> None:
    install_plugin("wg-broken", "wg_broken", "raise RuntimeError('kaput')")
    with pytest.raises(PluginLoadError, match="wg_broken"):
        Registry(strict=True).names("explainer")


def test_hook_that_raises_and_unknown_hooks_are_reported(install_plugin) -> None:
    install_plugin(
        "wg-raises",
        "wg_raises",
        """
        from wrapgrad import hookimpl
        @hookimpl
        def wrapgrad_metrics():
            raise ValueError("metric hook failed")
        """,
    )
    install_plugin(
        "wg-typo",
        "wg_typo",
        """
        from wrapgrad import hookimpl
        @hookimpl
        def wrapgrad_enhancer():  # misspelt: the hook is wrapgrad_enhancers
            return []
        """,
    )
    reg = Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.names("metric")
    messages = " | ".join(str(w.message) for w in caught)
    assert "wg_raises" in messages
    assert "metric hook failed" in messages
    assert "wg_typo" in messages
    assert "wrapgrad_enhancer" in messages
    assert {r.name for r in reg.plugins() if r.broken} == {"wg_raises", "wg_typo"}


def test_two_plugins_claiming_one_name_are_refused_naming_both(install_plugin) -> None:
    install_plugin("wg-one", "wg_one", ENHANCER_PLUGIN.format(name="twin"))
    install_plugin("wg-two", "wg_two", ENHANCER_PLUGIN.format(name="twin"))
    reg = Registry()
    with pytest.raises(PluginConflictError) as info:
        reg.get("enhancer", "twin")
    assert "wg_one" in str(info.value)
    assert "wg_two" in str(info.value)
    assert "wg-one" in str(info.value)
    assert "wg-two" in str(info.value)


def test_unknown_name_gets_closest_names(registry: Registry) -> None:
    with pytest.raises(UnknownNameError) as info:
        registry.get("explainer", "integrated_gradient", argument="method")
    assert info.value.suggestions[0] == "integrated_gradients"
    assert "method" in str(info.value)
    assert "did you mean" in str(info.value)
    # Case and separators do not matter where the name is unambiguous.
    assert registry.get("explainer", "IntegratedGradients").name == "integrated_gradients"
    assert registry.get("explainer", "deeplift").name == "deep_lift"


def test_plugins_registered_in_code_and_bad_records() -> None:
    class InCode:
        @staticmethod
        @wrapgrad.hookimpl
        def wrapgrad_metrics():
            yield MetricSpec(name="Always-One", factory=lambda: lambda a, b: a.new_ones(len(a)))

        @staticmethod
        @wrapgrad.hookimpl
        def wrapgrad_explainers():
            yield EnhancerSpec(name="wrong_kind", factory=object)  # not an ExplainerSpec

    reg = Registry(autoload=False)
    reg.register(InCode(), name="in_code")
    assert reg.get("metric", "always_one").name == "always_one"
    with pytest.warns(WrapgradWarning, match="must yield ExplainerSpec"):
        names = reg.names("explainer")
    assert "saliency" in names  # the built-ins are untouched by the bad plugin


def test_an_unavailable_name_is_unlisted_and_answered_with_its_reason() -> None:
    """A plugin may name a component it knows but does not offer (``Spec.unavailable``): it is
    in no listing, and looking it up says why; another plugin offering the name wins."""

    def batch_score(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean().expand(len(a))

    class Knows:
        @staticmethod
        @wrapgrad.hookimpl
        def wrapgrad_metrics():
            yield MetricSpec(
                name="batch_gap",
                factory=lambda: batch_score,
                unavailable="it scores the whole batch, not each sample; use l1_gap",
            )

    class Offers:
        @staticmethod
        @wrapgrad.hookimpl
        def wrapgrad_metrics():
            yield MetricSpec(name="batch_gap", factory=lambda: batch_score)

    reg = Registry(autoload=False)
    reg.register(Knows(), name="knows")
    assert "batch_gap" not in reg.names("metric")
    assert "batch_gap" not in reg.specs("metric")
    assert not [r for r in reg.plugins() if r.name == "batch_gap"]
    for asked in ("batch_gap", "Batch-Gap", "batchgap"):
        with pytest.raises(UnavailableError) as info:
            reg.get("metric", asked, argument="name")
        assert str(info.value) == (
            "name: metric 'batch_gap' is not available: it scores the whole batch, not each "
            "sample; use l1_gap"
        )
    assert info.value.reason.startswith("it scores the whole batch")
    with pytest.raises(UnavailableError, match="not each sample"):
        wrapgrad.metric("batch_gap", registry=reg)
    # A name nobody knows is still an unknown name with suggestions.
    with pytest.raises(UnknownNameError):
        reg.get("metric", "batch_gaps")

    reg.register(Offers(), name="offers")
    assert reg.get("metric", "batch_gap").unavailable == ""


def test_spec_records_validate_names() -> None:
    assert ExplainerSpec(name="My-Method", factory=print).name == "my_method"
    with pytest.raises(ValueError, match="snake case"):
        ExplainerSpec(name="1bad", factory=print)
    with pytest.raises(TypeError, match="callable"):
        ExplainerSpec(name="ok", factory=3)
    with pytest.raises(ValueError):
        ExplainerTraits(family="pixel")


def test_explainer_spec_shortcuts_to_its_traits_are_deprecated() -> None:
    traits = ExplainerTraits(name="m", family="layer", uses_hooks=True, stochastic=True)
    spec = ExplainerSpec(name="m", factory=print, traits=traits)
    for name in ("family", "uses_hooks", "stochastic"):
        with pytest.warns(DeprecationWarning, match=rf"ExplainerSpec\.{name} .*spec\.traits"):
            assert getattr(spec, name) == getattr(traits, name)
    with pytest.raises(AttributeError, match="no attribute 'famliy'"):
        spec.famliy  # noqa: B018


def test_import_loads_no_plugin_and_no_heavy_library() -> None:
    code = (
        "import sys, wrapgrad; "
        "heavy = [m for m in ('captum', 'quantus', 'wrapgrad_captum', 'wrapgrad_noise') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_lists_plugins_and_flags_broken_ones(install_plugin, capsys) -> None:
    from wrapgrad.cli import main
    from wrapgrad.registry import use_registry

    install_plugin("wg-broken", "wg_broken", "import does_not_exist_anywhere")
    with use_registry(Registry()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["plugins"]) == 0
        out = capsys.readouterr().out
        assert "saliency" in out
        assert "BROKEN plugin 'wg_broken'" in out
        assert "does_not_exist_anywhere" in out
        assert main(["plugins", "--strict"]) == 1
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert wrapgrad.__version__ in capsys.readouterr().out


def test_public_wrap_stays_the_function_after_submodule_imports() -> None:
    import importlib

    for module in (
        "wrapgrad.wrapping",
        "wrapgrad.moved",
        "wrapgrad_pipeline.runner",
        "wrapgrad_quantus",
    ):
        importlib.import_module(module)
    assert callable(wrapgrad.wrap)
    assert wrapgrad.wrap.__name__ == "wrap"
