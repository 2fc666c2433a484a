"""The engine hosts the roots worker when ``raft_roots`` is set (``master/service.py``), feeds it
the cache service's reports under ``saltext_raft_roots`` and shows its status; without the
option it has none."""

from __future__ import annotations

from saltext_raft.master import secret
from saltext_raft.master.config import from_opts
from saltext_raft.master.service import RaftService
from saltext_raft.replicated.service import CacheService
from saltext_raft.roots import layout


def _service(tmp_path, **extra):
    secret_file = tmp_path / "raft.secret"
    secret.generate(str(secret_file))
    raft = {"peers": {"m1": "127.0.0.1:4606"}, "secret_file": str(secret_file)}
    opts = {
        "id": "m1",
        "interface": "127.0.0.1",
        "cachedir": str(tmp_path / "cache"),
        "sock_dir": str(tmp_path / "sock"),
        "file_roots": {"base": [str(tmp_path / "srv")]},
        "engines": [{"raft": raft}],
        **extra,
    }
    return RaftService(opts, from_opts(opts, raft), runtime_factory=lambda: None)


def test_raft_roots_makes_the_engine_host_the_cache_and_the_roots_worker(tmp_path, monkeypatch):
    watched = []
    real_watch = CacheService.watch

    def watch(self, prefix, callback):
        watched.append((prefix, callback))
        real_watch(self, prefix, callback)

    monkeypatch.setattr(CacheService, "watch", watch)
    svc = _service(tmp_path, raft_roots=["file_roots"])
    assert svc.cache is not None and svc.roots is not None
    assert (layout.ROOTS_BANK, svc.roots.changed) in watched
    status = svc.roots.status()
    assert status["kinds"] == ["file_roots"]
    assert status["targets"] == {"file_roots": {"base": str(tmp_path / "srv")}}


def test_without_raft_roots_there_is_no_roots_worker(tmp_path):
    svc = _service(tmp_path)
    assert svc.roots is None
