"""Hook API versions: a plugin declares the version it was written for
(``WRAPGRAD_HOOK_API = "1.0"``); another major version makes it a broken plugin, reported by
name with both versions (no traceback), while the other plugins load."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest

import wrapgrad
from wrapgrad.cli import main
from wrapgrad.errors import PluginLoadError, WrapgradWarning
from wrapgrad.hookspecs import HOOK_API, hook_api_problem, parse_hook_api
from wrapgrad.registry import Registry, use_registry

PLUGIN = """
    from wrapgrad import hookimpl
    from wrapgrad.records import MetricSpec
    {declaration}

    def l1(a, b):
        return (a - b).abs().flatten(1).sum(1)

    @hookimpl
    def wrapgrad_metrics():
        yield MetricSpec(name="{name}", factory=lambda: l1, summary="l1", higher_is_better=False)
"""

CURRENT = f"{HOOK_API[0]}.{HOOK_API[1]}"


def test_the_hook_api_has_a_version() -> None:
    assert HOOK_API == (1, 2)
    assert parse_hook_api("1.0") == parse_hook_api("1") == parse_hook_api((1, 0)) == (1, 0)
    assert parse_hook_api(" 2.13 ") == (2, 13)
    with pytest.raises(
        ValueError, match=r"WRAPGRAD_HOOK_API: expected a version such as '1\.0', got 'one'"
    ):
        parse_hook_api("one")


def test_an_incompatible_plugin_is_a_broken_row_with_both_versions(install_plugin, capsys) -> None:  # type: ignore[no-untyped-def]
    install_plugin(
        "wg-future",
        "wg_future",
        PLUGIN.format(declaration='WRAPGRAD_HOOK_API = "2.0"', name="future_l1"),
        version="3.1",
    )
    install_plugin(
        "wg-fine",
        "wg_fine",
        PLUGIN.format(declaration=f'WRAPGRAD_HOOK_API = "{CURRENT}"', name="fine_l1"),
    )
    reg = Registry()
    with pytest.warns(WrapgradWarning, match="'wg_future' from distribution 'wg-future' is broken"):
        rows = reg.plugins()
    broken = [r for r in rows if r.broken]
    assert [(r.name, r.distribution, r.version) for r in broken] == [
        ("wg_future", "wg-future", "3.1")
    ]
    assert broken[0].error == (
        f"written for wrapgrad hook API 2.0, but this wrapgrad provides {CURRENT} (a different "
        "major version); install a release of the plugin for hook API 1.x"
    )
    names = {r.name for r in rows if r.kind == "metric"}
    assert "fine_l1" in names
    assert "future_l1" not in names
    with pytest.raises(wrapgrad.UnknownNameError, match="future_l1"):
        reg.get("metric", "future_l1")

    with use_registry(reg):
        assert main(["plugins", "--kind", "metric"]) == 0
        assert main(["plugins", "--kind", "metric", "--strict"]) == 1
    out = capsys.readouterr()
    assert (
        "BROKEN plugin 'wg_future' (wg-future 3.1): written for wrapgrad hook API 2.0, but this "
        f"wrapgrad provides {CURRENT}" in out.out
    )
    assert "Traceback" not in out.out + out.err


def test_a_newer_minor_version_and_no_declaration_are_accepted(install_plugin) -> None:  # type: ignore[no-untyped-def]
    install_plugin(
        "wg-minor",
        "wg_minor",
        PLUGIN.format(
            declaration=f'WRAPGRAD_HOOK_API = "{HOOK_API[0]}.{HOOK_API[1] + 7}"', name="minor_l1"
        ),
    )
    install_plugin("wg-none", "wg_none", PLUGIN.format(declaration="", name="none_l1"))
    reg = Registry()
    assert {"minor_l1", "none_l1"} <= set(reg.names("metric"))
    assert not reg.broken


def test_a_malformed_declaration_is_reported_and_strict_mode_raises(install_plugin) -> None:  # type: ignore[no-untyped-def]
    install_plugin(
        "wg-bad", "wg_bad", PLUGIN.format(declaration="WRAPGRAD_HOOK_API = 'latest'", name="bad_l1")
    )
    with pytest.warns(
        WrapgradWarning, match="WRAPGRAD_HOOK_API: expected a version such as '1.0', got 'latest'"
    ):
        assert "bad_l1" not in Registry().names("metric")
    with pytest.raises(PluginLoadError, match=r"'wg_bad'.*got 'latest'"):
        Registry(strict=True).names("metric")


def test_plugins_registered_in_code_are_checked_too() -> None:
    class Future:
        WRAPGRAD_HOOK_API = (0, 9)

    assert hook_api_problem(Future) is not None
    reg = Registry(autoload=False)
    reg.register(Future(), "future_in_code")
    with pytest.warns(WrapgradWarning, match="hook API 0.9"):
        assert [b.plugin for b in reg.broken] == ["future_in_code"]


def test_the_example_plugin_declares_a_compatible_version() -> None:
    """The example was written for 1.0 and uses nothing newer: it loads on any 1.x."""
    import wrapgrad_example_plugin

    assert parse_hook_api(wrapgrad_example_plugin.WRAPGRAD_HOOK_API)[0] == HOOK_API[0]
    assert hook_api_problem(wrapgrad_example_plugin) is None


def test_a_spec_table_builds_one_spec_per_row() -> None:
    from wrapgrad.records import CalibratorSpec, CommandSpec, PipelineStepSpec

    def factory() -> None: ...

    built = CalibratorSpec.from_rows(
        "name factory summary",
        [("one", factory, "First."), ("Two-B", factory, "Second.")],
        smoke={"draws": 2},
    )
    assert [type(s) for s in built] == [CalibratorSpec, CalibratorSpec]
    assert [s.name for s in built] == ["one", "two_b"]  # normalised as any spec's name
    assert [s.summary for s in built] == ["First.", "Second."]
    assert all(s.smoke_caps() == {"draws": 2} for s in built)
    with pytest.raises(ValueError, match="zip"):  # a row with a value missing
        CommandSpec.from_rows("name factory summary", [("one", factory)])
    # a subclass field named like a classmethod would hide it: PipelineStepSpec has `table`
    step = PipelineStepSpec.from_rows("name factory table", [("s", factory, "s")], schema=None)
    assert step[0].table == "s"


def _command_plugin(factory: Any, description: str | None = None) -> Any:
    from wrapgrad import hookimpl
    from wrapgrad.records import CommandSpec

    class Hello:
        @hookimpl
        def wrapgrad_commands(self) -> list[CommandSpec]:
            return [CommandSpec(name="hello", factory=factory, summary="Say hello.",
                                description=description)]  # fmt: skip

    return Hello()


def _hello_action(args: Any) -> int:
    print(f"hello {args.name}")
    return 0


def test_the_command_line_adds_a_commands_parser_from_its_spec(capsys) -> None:  # type: ignore[no-untyped-def]
    handed = []

    def add_hello(parser: Any) -> Any:
        handed.append(parser)
        parser.add_argument("--name", default="world")
        return _hello_action

    reg = Registry()
    reg.register(_command_plugin(add_hello, "Greets NAME, loudly."), name="hello_plugin")
    with use_registry(reg), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["hello", "--name", "you"]) == 0
        assert capsys.readouterr().out == "hello you\n"
        with pytest.raises(SystemExit):
            main(["--help"])
        assert re.search(r"hello\s+Say hello\.", capsys.readouterr().out)  # the summary
        with pytest.raises(SystemExit):
            main(["hello", "--help"])
        assert "Greets NAME, loudly." in capsys.readouterr().out  # the description
    assert [parser.prog for parser in handed] == ["wrapgrad hello"] * 3  # one per main()
    assert not [w for w in caught if "add_parser" in str(w.message)]


def test_a_hook_api_1_1_command_factory_still_adds_its_own_parser(capsys) -> None:  # type: ignore[no-untyped-def]
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--loud", action="store_true")

    def add_hello(subparsers: Any, name: str = "hello") -> Any:  # as written for hook API 1.1
        p = subparsers.add_parser(
            name, help="old help", description="The old description.", parents=[common],
            aliases=["hi"],
        )  # fmt: skip
        p.add_argument("--name", default="world")
        return _hello_action

    reg = Registry()
    reg.register(_command_plugin(add_hello), name="old_plugin")
    with use_registry(reg):
        with pytest.warns(DeprecationWarning, match="wrapgrad hello: the command's factory"):
            assert main(["hi", "--loud"]) == 0  # its alias and its parents' arguments work
        assert capsys.readouterr().out == "hello world\n"
        with pytest.warns(DeprecationWarning, match="add_parser"), pytest.raises(SystemExit):
            main(["--help"])
        assert re.search(r"hello \(hi\)\s+old help", capsys.readouterr().out)  # its own help
        with pytest.warns(DeprecationWarning, match="add_parser"), pytest.raises(SystemExit):
            main(["hello", "--help"])
        assert "The old description." in capsys.readouterr().out


def test_a_broken_command_is_reported_and_the_others_work(capsys) -> None:  # type: ignore[no-untyped-def]
    def add_misnamed(subparsers: Any) -> Any:  # adds a parser of another name
        return subparsers.add_parser("hallo")

    reg = Registry()
    reg.register(_command_plugin(add_misnamed), name="misnamed_plugin")
    broken = r"wrapgrad hello: .*named 'hallo'.*the other commands work"
    with use_registry(reg), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["plugins", "--kind", "command"]) == 0
        assert "run" in capsys.readouterr().out  # the built-in commands are listed
        with pytest.raises(SystemExit) as info:
            main(["hello"])
    assert info.value.code == 2  # argparse: invalid choice
    assert [w.category for w in caught if re.search(broken, str(w.message))] == [
        WrapgradWarning
    ]  # from main(["hello"]) (wrapgrad plugins builds no plugin command)

    def add_then_raise(subparsers: Any) -> Any:  # its parser is added before the error
        subparsers.add_parser("hello")
        raise RuntimeError("no action for you")

    reg = Registry()
    reg.register(_command_plugin(add_then_raise), name="raising_plugin")
    with use_registry(reg), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as info:
            main(["hello"])
    assert info.value.code == 2
    assert "the command 'hello' could not be added" in capsys.readouterr().err
    assert any("RuntimeError: no action for you" in str(w.message) for w in caught)
