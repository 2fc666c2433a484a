"""The job cache's names: which job ids and minion ids become bank names, and which are refused
(a minion chooses both in its returns)."""

from __future__ import annotations

import pytest

from saltext_raft.jobs import layout
from saltext_raft.kv.machine import check_name
from saltext_raft.replicated import config as cacheconfig


@pytest.mark.parametrize("jid", ["20261206230225272706", "20261206230225272706_4242"])
def test_salt_job_ids_are_kept(jid):
    assert layout.check_jid(jid) == jid
    check_name("bank", layout.returns_bank(jid))  # a name the replicated cache accepts


@pytest.mark.parametrize(
    "jid",
    [
        "../../etc",
        "20261206230225272706/../x",
        "20261206230225272706_../x",
        "2026120623022527270\0",
        "20261206230225272706_" + "9" * 65,  # huge
        "1" * 10_000,
        "+0261206230225272706",  # int() would take it: salt.utils.jid.is_jid does
        "2026_120623022527270",
        "",
        None,
        20261206230225272706,
        "req",
        "nocache",
    ],
)
def test_anything_else_is_refused_with_the_reason_and_a_short_quote(jid):
    with pytest.raises(layout.BadJobName, match="is not a Salt job id") as info:
        layout.check_jid(jid)
    assert len(str(info.value)) < 300  # a huge value is not copied into the log


@pytest.mark.parametrize("mid", ["web1", "web1.example.com", "db-01_x", "ünïcode", ".load", "ret"])
def test_minion_ids_that_name_no_path_are_kept(mid):
    assert layout.check_minion_id(mid) == mid
    check_name("key", mid)


@pytest.mark.parametrize(
    "mid",
    ["", ".", "..", "../web1", "a/b", "a\\b", "a\0b", "a\nb", "x" * 254, "é" * 127, None, 7],
)
def test_minion_ids_that_could_name_a_path_or_do_not_fit_a_file_name_are_refused(mid):
    with pytest.raises(layout.BadJobName) as info:
        layout.check_minion_id(mid)
    assert len(str(info.value)) < 300


def test_the_engine_hosts_the_cache_when_raft_is_only_the_job_cache():
    assert cacheconfig.cache_enabled({"master_job_cache": "raft"})
    assert not cacheconfig.cache_enabled({"master_job_cache": "local_cache"})
    assert not cacheconfig.cache_enabled({"master_job_cache": "raft"}, engine_option=False)
