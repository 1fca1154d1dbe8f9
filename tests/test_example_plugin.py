"""The example third-party plugin package (examples/plugin), installed by the test set-up
(``bash scripts/setup.sh test`` runs ``pip install -e examples/plugin``): found through its
entry point, listed by ``wrapgrad plugins`` with its distribution and version, and gone, with a
clear unknown-name error, when it is not installed. Its own tests (the conformance kit
included) are in examples/plugin/tests."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys

import pytest

import wrapgrad
from wrapgrad.cli import main
from wrapgrad.registry import Registry

DIST = "wrapgrad-example-plugin"
NAMES = {
    ("enhancer", "laplace_smoothgrad"),
    ("perturber", "input_laplace"),
    ("metric", "cosine_similarity"),
    ("metric", "relevance_mass"),
    ("dataset", "bars"),
    ("explainer", "gradient_x_sign"),
}


def _version() -> str:
    try:
        return md.version(DIST)
    except md.PackageNotFoundError:  # pragma: no cover - the set-up installs it
        pytest.fail("run `bash scripts/setup.sh test` to install examples/plugin")


def test_installed_plugin_is_discovered_through_its_entry_point(registry) -> None:  # type: ignore[no-untyped-def]
    version = _version()
    rows = {(r.kind, r.name): r for r in wrapgrad.plugins()}
    assert set(rows) >= NAMES
    for key in NAMES:
        assert (rows[key].plugin, rows[key].distribution, rows[key].version) == (
            "example",
            DIST,
            version,
        )


def test_wrapgrad_plugins_lists_it_with_distribution_and_version(registry, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["plugins", "--kind", "enhancer"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "laplace_smoothgrad" in line)
    assert line.split()[:5] == ["enhancer", "laplace_smoothgrad", "example", DIST, _version()]


def test_its_components_work_through_the_public_api(registry, cnn, images, labels) -> None:  # type: ignore[no-untyped-def]
    data = wrapgrad.load_dataset("bars", split="test", n=16)
    assert tuple(data.inputs.shape) == (4, 1, 8, 8)
    maps = wrapgrad.wrap(cnn, "saliency", enhancer="laplace_smoothgrad", n_samples=2, seed=0)(
        images, target=labels
    )
    assert maps.shape == images.shape
    scores = wrapgrad.metric("relevance_mass")(maps, images > 0)
    assert scores.shape == (4,)
    assert ((scores >= 0) & (scores <= 1)).all()


def _without_plugin() -> Registry:
    """The registry of an environment where the plugin is not installed (its entry point gone)."""
    eps = [
        ep
        for ep in md.entry_points(group="wrapgrad")
        if ep.dist is None or ep.dist.metadata["Name"] != DIST
    ]
    return Registry(entry_points=eps)


def test_uninstalled_its_names_are_gone_with_a_clear_error(cnn, images) -> None:  # type: ignore[no-untyped-def]
    reg = _without_plugin()
    assert not NAMES & {(r.kind, r.name) for r in reg.plugins()}
    with pytest.raises(
        wrapgrad.UnknownNameError,
        match="unknown enhancer 'laplace_smoothgrad'; did you mean 'smoothgrad'",
    ):
        wrapgrad.wrap(cnn, "saliency", enhancer="laplace_smoothgrad", registry=reg)
    with pytest.raises(wrapgrad.UnknownNameError, match="unknown metric 'relevance_mass'"):
        wrapgrad.metric("relevance_mass", registry=reg)
    with pytest.raises(wrapgrad.UnknownNameError, match="unknown dataset 'bars'"):
        wrapgrad.load_dataset("bars", registry=reg)
    # The built-ins are all still there.
    assert {r.name for r in reg.plugins() if r.kind == "enhancer"} >= {"smoothgrad", "noisegrad"}


def test_autoload_disabled_in_a_fresh_process_hides_it() -> None:
    env = {**os.environ, "WRAPGRAD_DISABLE_PLUGIN_AUTOLOAD": "1"}
    code = (
        "import wrapgrad\n"
        "print(wrapgrad.get_registry().names('enhancer'))\n"
        "wrapgrad.load_dataset('bars')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "'smoothgrad'" in run.stdout
    assert "laplace_smoothgrad" not in run.stdout
    assert run.returncode != 0
    assert "UnknownNameError: dataset: unknown dataset 'bars'" in run.stderr
