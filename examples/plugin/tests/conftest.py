"""Fixtures of the example plugin's tests: a fresh wrapgrad registry per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wrapgrad.registry import Registry, use_registry


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()
    with use_registry(reg):
        yield reg
