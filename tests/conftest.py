"""Test-wide settings for saltext-raft.

Layout (mirrors ``src/saltext_raft/``):

- ``tests/unit/``: pure code, no Salt daemons; the simulator and property tests live here.
- ``tests/functional/``: loader modules run through real Salt loaders, no daemons.
- ``tests/integration/``: real masters and minions from pytest-salt-factories; every test
  collected there is marked ``integration`` automatically.

Every directory under ``tests/`` is a package: give each new one an ``__init__.py`` (a test in
``tests/unit/test_layering.py`` checks it), so that two test files may share a name in different
directories. Shared helpers import as ``tests.<package>.<module>``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

TESTS_DIR = pathlib.Path(__file__).resolve().parent
INTEGRATION_DIR = TESTS_DIR / "integration"

try:
    from hypothesis import settings as hypothesis_settings
except ImportError:  # hypothesis comes with the ``tests`` extra; quick runs may lack it
    hypothesis_settings = None

if hypothesis_settings is not None:
    # CI machines are small and shared: no per-example deadline (it only produces flakes), and
    # derandomized so that a red CI run is reproducible from the same commit.
    hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    hypothesis_settings.register_profile("dev", deadline=None, print_blob=True)
    hypothesis_settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    )


def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION_DIR in pathlib.Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def salt_factories_config():
    """Keep daemon state under a short directory.

    Unix socket paths are limited to ~107 bytes, and the default root leaves directories behind
    in the temp dir. Paths that the daemons write (log_file, pidfile, sock_dir) must stay under
    this root: pytest-salt-factories prepends it to absolute paths outside it.
    """
    root_dir = tempfile.mkdtemp(prefix="srt-", dir="/tmp")
    try:
        yield {"root_dir": root_dir}
    finally:
        shutil.rmtree(root_dir, ignore_errors=True)
