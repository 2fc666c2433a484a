"""Sphinx configuration for the saltext-raft docs (MyST markdown)."""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# autodoc imports the state module from the source tree. What it imports reaches the transport
# package (the address rule), whose third-party imports the docs build does not install: they
# are stood in for, since only docstrings are read.
sys.path.insert(0, str(ROOT / "src"))
autodoc_mock_imports = ["msgpack", "zmq", "cryptography"]

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
