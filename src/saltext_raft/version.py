"""The version of saltext-raft: the one place it is written down.

``pyproject.toml`` reads it statically (setuptools ``attr:``), so this file must stay a plain
assignment with no imports.
"""

__version__ = "0.1.0"
