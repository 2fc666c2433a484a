"""A source master and receiving masters over one :class:`~.fakes.MemoryCache`: trees on disk,
the sync and the apply as the runner and the engine run them."""

from __future__ import annotations

import os

from saltext_raft.roots import layout
from saltext_raft.roots import sync
from saltext_raft.roots.apply import RootsApplier

CAP = layout.DEFAULT_MAX_FILE_BYTES


def write(root, path, data: bytes, mode=0o644):
    full = os.path.join(str(root), path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as fh:
        fh.write(data)
    os.chmod(full, mode)


def tree(root) -> dict:
    """``{relpath: bytes}`` of every regular file under ``root`` (links listed as such)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, str(root))
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            else:
                with open(full, "rb") as fh:
                    out[rel] = fh.read()
    return out


def do_sync(cache, src, test=False, kind="file_roots", env="base"):
    return sync.sync(cache, {kind: {env: str(src)}}, max_file_bytes=CAP, source="m1", test=test)


def applier(cache, dst, state_dir, kind="file_roots", env="base"):
    return RootsApplier(cache, {kind: {env: str(dst)}}, os.path.join(str(state_dir), "a.json"), CAP)
