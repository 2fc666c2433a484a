"""The ``raft_roots*`` options (``saltext_raft.roots.config``) and how the engine checks them."""

from __future__ import annotations

import pytest

from saltext_raft.replicated.config import cache_enabled
from saltext_raft.roots import config
from saltext_raft.roots import layout


def test_off_by_default_and_on_for_both_kinds_or_a_list():
    assert not config.from_opts({}).enabled
    assert config.from_opts({"raft_roots": True}).kinds == layout.KINDS
    assert config.from_opts({"raft_roots": ["pillar_roots"]}).kinds == ("pillar_roots",)
    s = config.from_opts({"raft_roots": True, "cachedir": "/c"})
    assert s.state_path == "/c/saltext_raft_roots/applied.json"
    assert s.max_file_bytes == 16 << 20 and s.scan_interval == 0


@pytest.mark.parametrize(
    "opts, option",
    [
        ({"raft_roots": "yes"}, "raft_roots"),
        ({"raft_roots": ["gitfs"]}, "raft_roots"),
        ({"raft_roots_max_file_bytes": 0}, "raft_roots_max_file_bytes"),
        ({"raft_roots_max_file_bytes": (64 << 20) + 1}, "raft_roots_max_file_bytes"),
        ({"raft_roots_max_file_bytes": True}, "raft_roots_max_file_bytes"),
        ({"raft_roots_scan_interval": 1}, "raft_roots_scan_interval"),
        ({"raft_roots_scan_interval": -5}, "raft_roots_scan_interval"),
    ],
)
def test_bad_options_are_refused_naming_the_option(opts, option):
    with pytest.raises(config.RootsConfigError) as err:
        config.from_opts(opts)
    assert err.value.option == option


def test_the_first_directory_of_each_environment_is_the_replicated_one():
    opts = {"file_roots": {"base": ["/srv/salt", "/srv/more"], "dev": "/srv/dev", "x": []}}
    assert config.targets(opts, "file_roots") == {"base": "/srv/salt", "dev": "/srv/dev"}
    with pytest.raises(config.RootsConfigError):
        config.targets({"file_roots": {"a/b": ["/x"]}}, "file_roots")


def test_raft_roots_turns_the_replicated_cache_on():
    assert cache_enabled({"raft_roots": True})
    assert not cache_enabled({})


def test_the_engine_refuses_bad_roots_options_and_roots_without_the_cache():
    from saltext_raft.master.config import EngineConfigError  # pylint: disable=C0415
    from saltext_raft.master.config import _check_roots  # pylint: disable=C0415

    with pytest.raises(EngineConfigError, match="raft_roots_scan_interval"):
        _check_roots({"raft_roots": True, "raft_roots_scan_interval": 2}, True)
    with pytest.raises(EngineConfigError, match="needs the replicated cache"):
        _check_roots({"raft_roots": True}, False)
    _check_roots({"raft_roots": True}, True)
