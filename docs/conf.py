"""Sphinx configuration of the wrapgrad documentation site (``bash scripts/docs.sh``).

Sphinx rather than mkdocs: the docstrings are reST (``.. math::`` blocks, ``:class:`` roles,
Google-style sections), which Sphinx's autodoc and napoleon render as they are; the guide pages
stay Markdown through MyST. The API reference is generated: ``autosummary`` walks every module
of ``wrapgrad`` and of each built-in plugin package (``plugins/*``), so a new module appears
without editing a page.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import types  # noqa: E402

import wrapgrad  # noqa: E402

# ``python -m wrapgrad`` runs the command line when imported; autosummary's walk over the
# package imports every module, so it gets an empty stand-in.
sys.modules.setdefault("wrapgrad.__main__", types.ModuleType("wrapgrad.__main__"))

project = "wrapgrad"
author = "wrapgrad developers"
release = version = wrapgrad.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "api/generated/*.rst.tmp"]
templates_path = ["_templates"]

# Markdown pages: ```` ```{eval-rst} ```` blocks, $...$ math, heading anchors for #links.
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# Docstrings: Google style, reST inside; the type hints show in the signatures.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" as fields of the class (a property of the same name is documented once).
napoleon_use_ivar = True
# Calibrators list their call options under "Options:".
napoleon_custom_sections = [("Options", "params_style")]
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # A package's __all__ re-exports names its submodules define: document each where it is
    # defined, once.
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Optional dependencies of a few modules (the docs build installs none of them).
autodoc_mock_imports: list[str] = []

html_theme = "alabaster"
html_title = f"wrapgrad {release}"
html_static_path: list[str] = []
