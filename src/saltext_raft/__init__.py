"""saltext-raft: Raft consensus for Salt master clusters.

This file only exposes the version. It must stay light: Salt imports this package through the
``salt.loader`` entry point, and ``saltext_raft.core`` must be importable without pulling in
Salt, asyncio, sockets or any third-party library (``tests/unit/test_layering.py`` checks it).
"""

from saltext_raft.version import __version__

__all__ = ["__version__"]
