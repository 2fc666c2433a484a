"""recover_store on a real node's storage: after a permanent loss of quorum the survivor, made
the only voter, elects itself, keeps every write and takes new masters in."""

from __future__ import annotations

import asyncio

import pytest

from saltext_raft.core import Role
from saltext_raft.runtime import CommitTimeout
from saltext_raft.runtime import DictStateMachine
from saltext_raft.runtime import NoLeader
from saltext_raft.runtime.backup import Backup
from saltext_raft.runtime.backup import decode
from saltext_raft.runtime.backup import encode
from saltext_raft.runtime.recovery import RecoveryRefused
from saltext_raft.runtime.recovery import recover_store
from saltext_raft.runtime.recovery import restore_store
from saltext_raft.storage import MemoryStore
from tests.unit.runtime.helpers import LocalCluster

SECRET = b"recovery-test-secret-recovery-test-secret"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def key(i: int) -> bytes:
    return b"k%d" % i


def test_the_survivor_of_a_lost_majority_serves_again_with_every_write():
    async def main():
        async with LocalCluster(extra=("n4",)) as c:
            leader = await c.leader()
            for i in range(20):
                await leader.propose(DictStateMachine.set_command(key(i), b"v%d" % i))
            await c.until("n1 applied every write", lambda: len(c.nodes["n1"].sm.data) == 20)
            await c.stop_all()  # n2 and n3 are lost for good; n1 is stopped for the recovery

            # Without the recovery, n1 alone has no quorum.
            await c.start("n1")
            with pytest.raises((NoLeader, CommitTimeout)):
                await c.nodes["n1"].propose(b"x", timeout=0.3)
            await c.stop("n1")

            dry = recover_store(MemoryStore(c.disks["n1"]), "n1", write=False)
            assert dry.previous.voters == {"n1", "n2", "n3"}
            again = recover_store(MemoryStore(c.disks["n1"]), "n1", write=False)
            assert again.entry == dry.entry  # the dry run wrote nothing
            done = recover_store(MemoryStore(c.disks["n1"]), "n1", write=True)
            assert done.entry == dry.entry and done.membership.voters == {"n1"}

            n1 = await c.start("n1")
            await c.until("n1 leads alone", lambda: n1.node.role is Role.LEADER)
            assert n1.status()["membership"]["voters"] == ["n1"]
            assert all(n1.sm.get(key(i)) == b"v%d" % i for i in range(20))
            await n1.propose(DictStateMachine.set_command(b"after", b"1"))

            # A master rebuilt empty joins the recovered cluster and gets everything.
            n4 = await c.start("n4", join=True)
            await c.until(
                "n4 is a voter with every write",
                lambda: "n4" in n1.node.membership.voters and n4.sm.get(b"after") == b"1",
                timeout=10,
            )
            assert all(n4.sm.get(key(i)) == b"v%d" % i for i in range(20))
            await n1.propose(DictStateMachine.set_command(b"two", b"2"))  # quorum of two now

    run(main())


def test_a_backup_restored_on_a_new_master_starts_a_cluster_with_that_state():
    async def main():
        async with LocalCluster(extra=("n9",)) as c:
            leader = await c.leader()
            for i in range(20):
                await leader.propose(DictStateMachine.set_command(key(i), b"v%d" % i))
            follower = next(rt for rt in c.nodes.values() if rt is not leader)
            await c.until("the follower applied every write", lambda: len(follower.sm.data) == 20)
            snap = await follower.backup_snapshot()  # any member can take one
            assert snap.meta.index == follower.node.applied_index
            assert await follower.backup_snapshot() == snap  # nothing applied since: the same
            blob = encode(Backup("test", follower.id, 0.0, snap), SECRET)
            await leader.propose(DictStateMachine.set_command(b"later", b"x"))  # not in it
            await c.stop_all()  # every master is lost

            with pytest.raises(RecoveryRefused, match="already holds Raft data"):
                restore_store(MemoryStore(c.disks["n1"]), "n1", snap, write=False)
            backup = decode(blob, SECRET)
            rec = restore_store(
                MemoryStore(c.disks["n9"]), "n9", backup.snapshot, default_address="mem://n9",
                write=True,
            )  # fmt: skip
            assert rec.previous.voters == {"n1", "n2", "n3"}
            assert rec.membership.addresses == (("n9", "mem://n9"),)
            n9 = await c.start("n9")
            await c.until("n9 leads alone", lambda: n9.node.role is Role.LEADER)
            assert all(n9.sm.get(key(i)) == b"v%d" % i for i in range(20))
            assert n9.sm.get(b"later") is None  # written after the backup
            await n9.propose(DictStateMachine.set_command(b"new", b"1"))

    run(main())
