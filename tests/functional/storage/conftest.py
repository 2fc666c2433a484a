"""Fixtures for the storage contract and crash tests."""

import pytest

from tests.functional.storage.backends import make_backend
from tests.functional.storage.backends import redis_server  # noqa: F401  pylint: disable=unused-import


@pytest.fixture(params=["memory", "localfs", "localfs-keys", "redis"])
def backend(request, tmp_path):
    """Each contract test runs against every store: in memory, localfs with segment files,
    localfs with one key per record (the scheme of every other driver), and a real Redis."""
    return make_backend(request.param, request, tmp_path)


@pytest.fixture(params=["localfs", "localfs-keys", "redis"])
def cache_backend(request, tmp_path):
    """The cache-backed stores only (compared against MemoryStore as the model)."""
    return make_backend(request.param, request, tmp_path)
