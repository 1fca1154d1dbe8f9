"""Doctest collection over the source directories (pyproject's testpaths): modules that must
not be imported by a collector are skipped; torch runs single-threaded as in tests/."""

from __future__ import annotations

import os

import torch

# ``python -m wrapgrad`` runs the command line when imported.
collect_ignore = ["wrapgrad/__main__.py", "docs/conf.py"]


def pytest_configure(config: object) -> None:
    torch.set_num_threads(int(os.environ.get("WRAPGRAD_TEST_THREADS", "1")))
