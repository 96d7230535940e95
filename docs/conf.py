"""Sphinx configuration of the dataagent-jupyter docs (MyST Markdown, PyData theme).

Built in CI with warnings as errors (``scripts/test.sh``). The configuration reference,
the list of errors and the evaluation command's options are generated from the code at
build time (``_ext/generated.py``), so they cannot drift from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

from dataagent_jupyter import __version__  # noqa: E402

project = "dataagent-jupyter"
author = "the dataagent-jupyter authors"
copyright = "the dataagent-jupyter authors"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "generated"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "_generated"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "pydata_sphinx_theme"
html_title = "dataagent-jupyter"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "header_links_before_dropdown": 7,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars: dict[str, list[str]] = {"**": []}  # every page is top level: the header lists them
html_show_sourcelink = False
