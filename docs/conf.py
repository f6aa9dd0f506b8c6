"""Sphinx configuration: the guides are Markdown (MyST), the API reference comes from the
docstrings (autodoc). Built with warnings as errors by ``make docs`` and by the test suite
(tests/test_docs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tornado_kerb  # noqa: E402 - after the path

project = "tornado_kerb"
author = "the tornado_kerb maintainers"
copyright = "2026, the tornado_kerb maintainers"
release = tornado_kerb.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "examples/__pycache__", "examples/*.py"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Type hints name things (tornado.web.RequestHandler, gssapi.Credentials…) that have no
# page here: no cross-reference warnings for them (no network for intersphinx in CI).
nitpicky = False

html_theme = "furo"
html_title = f"tornado_kerb {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
