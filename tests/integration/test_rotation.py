"""Secret rotation on three real masters (issue 18): every master accepts the new secret, then
sends under it, then drops the old one, each step with ``salt-run raft.reload_secrets`` and no
restart. Throughout: one leader in one term, no frame refused for authentication, no gate
closed, and a minion (on master 1) served before, between the steps and after. Runbook:
docs/operations.md, "Rotating the cluster secret"."""

from __future__ import annotations

import os
import secrets
import threading

import pytest

from saltext_raft.testing.cluster import RaftCluster
from saltext_raft.testing.cluster import run_json
from tests.integration.conftest import log_text
from tests.integration.conftest import ready_state
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.slow]

MINION = "minion-rotate"


@pytest.fixture(scope="module")
def cluster(salt_factories, tmp_path_factory):
    secret_dir = tmp_path_factory.mktemp("rotate")
    with RaftCluster(
        salt_factories,
        secret_dir,
        engine=lambda mid: {"accept_secret_files": [next_file(secret_dir, mid)]},
        name="rotate",
    ) as c:
        c.start()
        wait_for(c.gates_open, 120, "every master's gate to open")
        c.minion(c.ids[0], MINION)
        yield c


def next_file(secret_dir, mid: str) -> str:
    """Master ``mid``'s ``accept_secret_files`` entry, next to the cluster's ``secret_file``
    (one file shared by the three masters: rotating it is one write)."""
    return os.path.join(str(secret_dir), f"{mid}.secret.next")


def write(path: str, text: str) -> None:
    """A secret file as an operator writes one: 0600 (the engine refuses a wider mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def reload_all(c: RaftCluster, accepted_more: int) -> None:
    for mid in c.ids:
        rc, data, ret = run_json(c.masters[mid], "raft.reload_secrets")
        assert rc == 0 and data["accepted_more"] == accepted_more, ret


def auth_drops(c: RaftCluster) -> dict:
    out = {}
    for mid in c.ids:
        rc, data, ret = run_json(c.masters[mid], "raft.status")
        assert rc == 0, ret
        out[mid] = data["transport"]["dropped"]["auth"]
    return out


def ping(c: RaftCluster, via: str) -> bool:
    ret = c.masters[via].salt_cli(timeout=60).run("test.ping", "-t", "20", minion_tgt=MINION)
    return ret.returncode == 0 and ret.data is True


class LeaderWatch:
    """Polls every master's readiness file; records each (leader, term) seen and closed gates."""

    def __init__(self, c: RaftCluster):
        self.c = c
        self.seen: set[tuple] = set()
        self.closed: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for mid in self.c.ids:
                st = ready_state(self.c.masters[mid])
                if st:
                    self.seen.add((st.get("leader"), st.get("term")))
                    if not st.get("ready"):
                        self.closed.append((mid, st.get("reason")))
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def test_three_masters_rotate_their_secret_without_losing_the_leader_or_a_request(cluster):
    c = cluster
    wait_for(c.leader, 30, "one agreed leader")
    assert ping(c, c.ids[0])
    with open(c.secret_file, encoding="utf-8") as fh:
        old, new = fh.read().strip(), secrets.token_hex(32)
    before = auth_drops(c)
    with LeaderWatch(c) as watch:
        # 1. every master accepts the new secret (still sends under the old one)
        for mid in c.ids:
            write(next_file(os.path.dirname(c.secret_file), mid), new)
        reload_all(c, accepted_more=1)
        assert ping(c, c.ids[0])
        # 2. every master sends under the new secret (accepts the old one)
        write(c.secret_file, new)
        for mid in c.ids:
            write(next_file(os.path.dirname(c.secret_file), mid), old)
        reload_all(c, accepted_more=1)
        assert ping(c, c.ids[0])
        # 3. the old secret is dropped
        for mid in c.ids:
            os.unlink(next_file(os.path.dirname(c.secret_file), mid))
        reload_all(c, accepted_more=0)
        assert ping(c, c.ids[0])  # traffic flows under the new secret alone
    assert len(watch.seen) == 1, watch.seen  # one leader, one term, throughout
    assert not watch.closed, watch.closed[:5]
    assert auth_drops(c) == before  # no frame failed authentication at any step
    for mid in c.ids:
        assert "saltext-raft gate: refused a request" not in log_text(c.masters[mid])
