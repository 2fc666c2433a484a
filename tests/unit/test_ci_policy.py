"""The CI policy of the test suite (tests/ci.py): a missing prerequisite skips locally and
fails in CI."""

from __future__ import annotations

import pytest

from tests.ci import in_ci
from tests.ci import skip_or_fail


def test_ci_is_set_when_the_variable_is_not_empty():
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"})
    assert not in_ci({}) and not in_ci({"CI": ""})


def test_a_missing_prerequisite_skips_locally_and_fails_in_ci():
    with pytest.raises(pytest.skip.Exception, match="redis-server is not installed"):
        skip_or_fail("redis-server is not installed", env={})
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed.*CI must"):
        skip_or_fail("redis-server is not installed", env={"CI": "true"})
