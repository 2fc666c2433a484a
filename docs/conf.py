"""Sphinx configuration for the saltext-raft docs (MyST markdown)."""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# autodoc imports the state module from the source tree; it and the code it imports
# (saltext_raft.statelogic, saltext_raft.core.nodeid) need only the standard library.
sys.path.insert(0, str(ROOT / "src"))

project = "saltext-raft"
author = "saltext-raft developers"
copyright = "saltext-raft developers"
# Read the version without importing the package (the docs build does not install it).
release = re.search(
    r'^__version__ = "([^"]+)"',
    (ROOT / "src" / "saltext_raft" / "version.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"saltext-raft {release}"
