"""The KV state machine: Salt cache semantics, determinism, dedup of retries, snapshots."""

import msgpack
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from saltext_raft.kv import Command
from saltext_raft.kv import KVStateMachine
from saltext_raft.kv import decode_command
from saltext_raft.kv import decode_entry
from saltext_raft.kv import encode_batch
from saltext_raft.kv import encode_command
from saltext_raft.kv.machine import ADD
from saltext_raft.kv.machine import EXPIRE
from saltext_raft.kv.machine import FLUSH
from saltext_raft.kv.machine import STORE
from saltext_raft.kv.machine import UNION
from saltext_raft.kv.machine import BadName
from saltext_raft.kv.machine import UnknownCommand
from saltext_raft.kv.machine import check_flush
from saltext_raft.kv.machine import check_name
from saltext_raft.kv.machine import expire_value
from saltext_raft.kv.machine import tree_contents
from saltext_raft.kv.machine import union_value


def store(sm, bank, key, value, ts=1, client="", seq=0):
    return sm.apply(encode_command(Command(STORE, bank, key, value, ts, client, seq)))


def flush(sm, bank, key=None, client="", seq=0):
    return sm.apply(encode_command(Command(FLUSH, bank, key, b"", 0, client, seq)))


def test_store_fetch_list_contains_updated_like_salt_localfs():
    sm = KVStateMachine()
    store(sm, "minions/web1", "data", b"\x81grains", ts=100)
    store(sm, "minions/web2", "data", b"x", ts=101)
    assert sm.fetch("minions/web1", "data") == b"\x81grains"
    assert sm.fetch("minions/web1", "nope") is None
    assert sm.list("minions") == ["web1", "web2"]
    assert sm.list("minions/web1") == ["data"]
    assert sm.contains("minions/web1") and sm.contains("minions/web1", "data")
    assert not sm.contains("minions/web3")
    assert sm.updated("minions/web2", "data") == 101


def test_flush_key_keeps_bank_and_flush_bank_is_recursive():
    sm = KVStateMachine()
    store(sm, "minions/web1", "data", b"1")
    store(sm, "minions/web1", "mine", b"2")
    assert flush(sm, "minions/web1", "data") is True
    assert flush(sm, "minions/web1", "data") is False
    assert sm.contains("minions/web1")
    assert flush(sm, "minions") is True
    assert sm.list("minions") == [] and not sm.contains("minions/web1")


def test_client_retries_apply_once():
    sm = KVStateMachine()
    assert store(sm, "b", "k", b"v1", client="m1:1", seq=1) is True
    store(sm, "b", "k", b"v2", client="m2:1", seq=1)
    # m1 retries seq 1 (its first answer was lost): it must not overwrite v2
    assert store(sm, "b", "k", b"v1", client="m1:1", seq=1) is True
    assert sm.fetch("b", "k") == b"v2"
    assert sm.applied_commands == 2


def test_malformed_command_raises_a_clear_error():
    sm = KVStateMachine()
    with pytest.raises(ValueError, match="malformed KV command"):
        sm.apply(b"\xc1garbage")
    with pytest.raises(ValueError, match="malformed KV command"):
        decode_command(encode_command(Command(STORE, "b", "k", "not bytes")))


@pytest.mark.parametrize(
    "raw",
    [
        [7, "b", "k", b"", 0, "c", 1],  # a newer version's command
        [9, {"whatever": "shape"}],  # a newer version's entry of another shape
        [3, [[STORE, "b", "k", b"v", 0, "c", 1], [7, "b", "k", b"", 0, "c", 2]]],
    ],
)
def test_a_command_type_of_a_newer_version_asks_the_node_to_halt(raw):
    """Skipping it would leave this master's cache different from the masters that apply it:
    the error carries ``halt``, which stops the runtime instead (tests/functional/runtime)."""
    sm = KVStateMachine()
    with pytest.raises(UnknownCommand, match="not known to this version") as info:
        sm.apply(msgpack.packb(raw, use_bin_type=True))
    assert info.value.halt is True
    assert sm.applied_commands == 0 and sm.list("") == []
    # a known type in a wrong shape is malformed: every node skips it alike
    with pytest.raises(ValueError, match="malformed") as info:
        sm.apply(msgpack.packb([STORE, "b"], use_bin_type=True))
    assert not getattr(info.value, "halt", False)


def add(sm, bank, key, value, ts=1, client="", seq=0):
    return sm.apply(encode_command(Command(ADD, bank, key, value, ts, client, seq)))


def test_add_stores_only_a_key_the_bank_lacks():
    sm = KVStateMachine()
    assert add(sm, "minions/web1", "mine", b"old", ts=5) is True
    assert sm.list("minions") == ["web1"] and sm.updated("minions/web1", "mine") == 5
    store(sm, "minions/web1", "mine", b"new", ts=9)
    assert add(sm, "minions/web1", "mine", b"old", ts=10) is False
    assert sm.fetch("minions/web1", "mine") == b"new" and sm.updated("minions/web1", "mine") == 9
    # a bank of that name does not count as the key
    store(sm, "minions/web1/mine", "x", b"1")
    flush(sm, "minions/web1", "mine")
    assert add(sm, "minions/web1", "mine", b"again") is True
    assert sm.applied_commands == 6


def test_a_retried_add_answers_what_its_first_apply_answered():
    sm = KVStateMachine()
    assert add(sm, "b", "k", b"v1", client="imp", seq=1) is True
    # the retry finds the key present, but it is the same add: it did store
    assert add(sm, "b", "k", b"v1", client="imp", seq=1) is True
    store(sm, "b", "k", b"v2", client="m1", seq=1)
    assert add(sm, "b", "k", b"v3", client="imp", seq=2) is False
    assert add(sm, "b", "k", b"v3", client="imp", seq=2) is False
    assert sm.fetch("b", "k") == b"v2" and sm.applied_commands == 3


def test_a_batch_applies_its_commands_in_order_with_one_result_each():
    sm = KVStateMachine()
    batch = [
        Command(STORE, "b", "k", b"v1", 5, "c1", 1),
        Command(STORE, "b", "k", b"v2", 6, "c2", 1),
        Command(FLUSH, "b", "gone", b"", 6, "c3", 1),
        Command(STORE, "b", "k", b"old", 4, "c1", 1),  # a retry of c1's seq 1 in the same batch
    ]
    assert sm.apply(encode_batch(batch)) == [True, True, False, True]
    assert sm.fetch("b", "k") == b"v2" and sm.updated("b", "k") == 6
    assert sm.applied_commands == 3
    assert decode_entry(encode_batch(batch)) == (True, batch)
    assert decode_entry(encode_command(batch[0])) == (False, [batch[0]])


@pytest.mark.parametrize(
    "raw",
    [
        [3, []],  # no commands
        [3, "x"],
        [3, [[STORE, "b", "k", b"v", 0, "c"]]],  # six fields
        [3, [[STORE, "b", "k", b"v", None, "c", 1]]],
        [3, [[STORE, "b", "k", b"v", 0, "c", 1], [STORE, "b", None, b"v", 0, "c", 2]]],
        [3, [[ADD, "b", "k", b"v", 0, "c", 1], [ADD, "b", None, b"v", 0, "c", 2]]],
    ],
)
def test_a_malformed_batch_is_refused_whole(raw):
    import msgpack  # pylint: disable=import-outside-toplevel

    sm = KVStateMachine()
    with pytest.raises(ValueError, match="malformed KV"):
        sm.apply(msgpack.packb(raw, use_bin_type=True))
    assert sm.applied_commands == 0 and sm.list("") == []


cmds = st.lists(
    st.tuples(
        st.sampled_from([STORE, FLUSH, ADD]),
        st.sampled_from(["a", "a/b", "a/b/c", "d"]),
        st.one_of(st.none(), st.sampled_from(["k1", "k2"])),
        st.binary(max_size=8),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(cmds, st.integers(0, 40))
def test_snapshot_restore_then_replay_equals_straight_apply(commands, cut):
    encoded = [
        encode_command(Command(op, bank, key if op == FLUSH or key else "k0", val, i, "c", i + 1))
        for i, (op, bank, key, val) in enumerate(commands)
    ]
    straight = KVStateMachine()
    for e in encoded:
        straight.apply(e)
    first = KVStateMachine()
    for e in encoded[:cut]:
        first.apply(e)
    second = KVStateMachine()
    second.restore(first.snapshot())
    for e in encoded[cut:]:
        second.apply(e)
    assert sorted(second.walk()) == sorted(straight.walk())
    assert second.snapshot() == straight.snapshot()


@settings(max_examples=100, deadline=None)
@given(cmds, st.lists(st.integers(1, 6), max_size=20))
def test_batches_apply_like_their_commands_one_by_one(commands, sizes):
    encoded = [
        Command(op, bank, key if op == FLUSH or key else "k0", val, i, f"c{i % 3}", i + 1)
        for i, (op, bank, key, val) in enumerate(commands)
    ]
    single = KVStateMachine()
    expected = [single.apply(encode_command(c)) for c in encoded]
    batched = KVStateMachine()
    results = []
    i = 0
    for n in [*sizes, len(encoded)]:
        part = encoded[i : i + n]
        if part:
            results.extend(batched.apply(encode_batch(part)))
        i += n
    assert results == expected
    assert batched.snapshot() == single.snapshot()


deep_cmds = st.lists(
    st.tuples(
        st.sampled_from([STORE, STORE, STORE, FLUSH]),
        st.sampled_from(["", "a", "a/b", "a/b/c", "a/x", "d", "d/e/f/g", "minions/m1"]),
        st.one_of(st.none(), st.sampled_from(["k1", "k2", "data", "ü"])),
        st.binary(max_size=300),
        st.integers(0, 2**40),
    ),
    max_size=60,
)


def deep_commands(drawn):
    """Commands from ``deep_cmds`` draws: five clients, each retry-free (seq grows)."""
    return [
        Command(op, bank, key if op == FLUSH or key else "k0", val, ts, f"c{i % 5}", i + 1)
        for i, (op, bank, key, val, ts) in enumerate(drawn)
    ]


@settings(max_examples=150, deadline=None)
@given(deep_cmds, st.integers(0, 60))
def test_snapshot_later_encodes_the_state_of_its_call_byte_for_byte(commands, cut):
    """What the runtime encodes on a worker thread is exactly ``snapshot()`` at the time of the
    ``snapshot_later()`` call, however the state changes while it waits to be encoded."""
    encoded = deep_commands(commands)
    sm = KVStateMachine()
    for c in encoded[:cut]:
        sm.apply_command(c)
    expected = sm.snapshot()
    pack = sm.snapshot_later()
    for c in encoded[cut:]:
        sm.apply_command(c)
    store(sm, "a/b", "late", b"changed after the call")
    flush(sm, "a")
    assert pack() == expected
    restored = KVStateMachine()
    restored.restore(pack())
    assert restored.snapshot() == expected


def as_packb_would(sm):
    """The snapshot format, built independently of the machine's encoder: msgpack of
    {"tree": [keys, children], "dedup": rows}, with keys {key: [value, updated]} and children
    {name: [keys, children]} in the tree's own (insertion) order, as the first snapshots were
    written."""

    def obj(bank):
        return [
            {k: [v, ts] for k, (v, ts) in bank.keys.items()},
            {name: obj(child) for name, child in bank.children.items()},
        ]

    # pylint: disable=protected-access
    dedup = [[c, s, r] for c, (s, r) in sm._dedup.items()]
    return msgpack.packb({"tree": obj(sm._root), "dedup": dedup}, use_bin_type=True)


@settings(max_examples=150, deadline=None)
@given(deep_cmds)
def test_the_snapshot_format_is_the_msgpack_of_the_nested_state(commands):
    """Snapshots written by any version read back: the piecewise encoder writes what ``packb``
    of the whole nested object writes, in the same order."""
    sm = KVStateMachine()
    for i, (op, bank, key, val, ts) in enumerate(commands):
        sm.apply_command(Command(op, bank, key if op == FLUSH or key else "k0", val, ts, "c", i))
    assert sm.snapshot() == as_packb_would(sm)


def walk_with_reads(sm):
    """Banks and items as the public reads (what Salt's cache API sees) list them."""
    banks, items, stack = [], [], [""]
    while stack:
        bank = stack.pop()
        banks.append(bank)
        for name in sm.list(bank):
            value = sm.fetch(bank, name)
            if value is not None:
                items.append((bank, name, value, sm.updated(bank, name)))
            sub = f"{bank}/{name}" if bank else name
            if sm.contains(sub):
                stack.append(sub)
    return sorted(banks), sorted(items)


@settings(max_examples=150, deadline=None)
@given(deep_cmds)
def test_a_copied_tree_lists_what_the_reads_list_and_ignores_later_changes(commands):
    sm = KVStateMachine()
    for i, (op, bank, key, val, ts) in enumerate(commands):
        sm.apply_command(Command(op, bank, key if op == FLUSH or key else "k0", val, ts, "c", i))
    tree = sm.copy_tree()
    expected = walk_with_reads(sm)
    store(sm, "new/bank", "k", b"later")
    flush(sm, "a")
    banks, items = tree_contents(tree)
    assert (sorted(banks), sorted(items)) == expected


@settings(max_examples=150, deadline=None)
@given(deep_cmds, st.integers(0, 60))
def test_restore_later_decodes_without_touching_the_state_and_installs_it_whole(commands, cut):
    """A follower decodes a snapshot on a worker thread while its state stays as it was; the
    install then gives exactly the snapshot's state (its reads, its dedup table, its bytes)."""
    encoded = deep_commands(commands)
    leader = KVStateMachine()
    for c in encoded[:cut]:
        leader.apply_command(c)
    data = leader.snapshot()
    follower = KVStateMachine()
    store(follower, "old", "k", b"before the snapshot")
    before = follower.snapshot()
    install = follower.restore_later(data)()
    assert follower.snapshot() == before  # decoded, not installed yet
    install()
    assert follower.snapshot() == data
    assert walk_with_reads(follower) == walk_with_reads(leader)
    for c in encoded[:cut]:  # every retry of an applied write is recognised
        assert follower.apply_command(c) == leader.apply_command(c)
    assert follower.snapshot() == data


def test_restore_of_an_empty_snapshot_empties_the_state():
    sm = KVStateMachine()
    store(sm, "a", "k", b"v")
    sm.restore_later(b"")()()
    assert sm.list("") == [] and sm.snapshot() == KVStateMachine().snapshot()


def _valid_snapshot():
    sm = KVStateMachine()
    store(sm, "minions/m1", "data", b"grains", client="c", seq=1)
    store(sm, "minions/m2", "data", b"grains", client="c", seq=2)
    return sm.snapshot()


@pytest.mark.parametrize(
    "data",
    [
        _valid_snapshot()[:-1],  # torn
        _valid_snapshot()[: len(_valid_snapshot()) // 2],
        _valid_snapshot() + b"\x00",  # trailing bytes
        b"\x91\x01",  # not a map
        msgpack.packb({"tree": [{}, {}]}),  # no dedup table
        msgpack.packb({"dedup": []}),  # no tree
        msgpack.packb({"tree": [{"k": 5}, {}], "dedup": []}),  # a value is not [bytes, ts]
        msgpack.packb({"tree": [{}, {"b": [{}, {}, {}]}], "dedup": []}),  # a bank of 3 parts
        msgpack.packb({"tree": [{}, {}], "dedup": [[1, 2]]}),  # a dedup row of 2
    ],
)
def test_a_malformed_snapshot_is_refused_and_the_state_kept(data):
    sm = KVStateMachine()
    store(sm, "a", "k", b"v")
    before = sm.snapshot()
    decode = sm.restore_later(data)
    with pytest.raises(ValueError):
        decode()
    with pytest.raises(ValueError):
        sm.restore(data)
    assert sm.snapshot() == before


def test_a_snapshot_from_a_newer_version_with_more_fields_is_read():
    obj = msgpack.unpackb(_valid_snapshot(), raw=False)
    obj["later_field"] = {"anything": [1, 2]}
    sm = KVStateMachine()
    sm.restore(msgpack.packb(obj, use_bin_type=True))
    assert sm.fetch("minions/m2", "data") == b"grains" and sm.snapshot() == _valid_snapshot()


def test_deep_banks_pack_and_unpack_without_recursion():
    sm = KVStateMachine()
    bank = "/".join(f"b{i}" for i in range(3000))  # deeper than the recursion limit
    store(sm, bank, "k", b"deep")
    data = sm.snapshot_later()()  # the iterative encoder (snapshot() itself recurses)
    restored = KVStateMachine()
    restored.restore(data)
    assert restored.fetch(bank, "k") == b"deep"


@pytest.mark.parametrize("root", ["", "/", "//"])
def test_flushing_the_root_bank_is_refused_and_changes_nothing(root):
    """Regression (issue 18, L7): a flush of bank "" wiped every bank, every replicated minion
    key included, on every master."""
    sm = KVStateMachine()
    store(sm, "saltext_raft_keys/keys", "web1", b"accepted")
    store(sm, "minions/web1", "data", b"grains")
    before = sm.snapshot()
    assert flush(sm, root) is False
    assert sm.snapshot() == before
    assert sm.fetch("saltext_raft_keys/keys", "web1") == b"accepted"
    with pytest.raises(BadName, match="would remove every bank|would leave"):
        check_flush(root, None)


@pytest.mark.parametrize(
    "bank", ["./saltext_raft_keys/keys", "a/./b", "..", "a/../b", "/abs", "a\0b"]
)
def test_the_name_rule_refuses_dot_parts_escapes_and_nul(bank):
    with pytest.raises(BadName):
        check_name("bank", bank, allow_empty=True)
    check_name("bank", "minions/web1")
    check_flush("minions", None)
    check_flush("", "key")  # a key of the root bank is an ordinary key


# --- union and expire: the job cache's commands ----------------------------------------------
def union(sm, bank, key, items, ts=1, client="", seq=0):
    cmd = Command(UNION, bank, key, union_value(items), ts, client, seq)
    return sm.apply(encode_command(cmd))


def expire(sm, bank, cutoff, client="", seq=0):
    return sm.apply(
        encode_command(Command(EXPIRE, bank, None, expire_value(cutoff), 0, client, seq))
    )


def test_union_merges_lists_written_by_several_proposers_without_losing_a_name():
    sm = KVStateMachine()
    assert union(sm, "jobs/1", "minions", ["web2", "web1"], ts=10) is True
    assert union(sm, "jobs/1", "minions", ["db1", "web1"], ts=11) is True
    assert msgpack.unpackb(sm.fetch("jobs/1", "minions")) == ["db1", "web1", "web2"]
    assert sm.updated("jobs/1", "minions") == 11
    # a key stored otherwise before is replaced by the union, the same on every node
    store(sm, "jobs/2", "minions", b"\xc1not msgpack", ts=5)
    union(sm, "jobs/2", "minions", ["a"], ts=6)
    assert msgpack.unpackb(sm.fetch("jobs/2", "minions")) == ["a"]


def test_expire_removes_the_sub_banks_first_written_before_the_cut_off():
    sm = KVStateMachine()
    store(sm, "jobs/old", "jid", b"x", ts=100)
    store(sm, "jobs/old", "load", b"x", ts=300)  # a later write does not make it younger
    store(sm, "jobs/new", "jid", b"x", ts=200)
    store(sm, "jobs/new/ret", "web1", b"x", ts=150)  # returns do not age a job with keys
    store(sm, "jobs/orphan/ret", "web1", b"x", ts=120)  # no key of its own: aged by its returns
    store(sm, "jobs/young-orphan/ret", "web1", b"x", ts=250)
    store(sm, "jobs/empty/ret", "web1", b"x", ts=900)
    flush(sm, "jobs/empty/ret", "web1")  # a bank left without any key
    store(sm, "jobs", "top-level key", b"x", ts=1)  # keys of the bank itself are not jobs
    assert sm.expired("jobs", 200) == ["old", "orphan", "empty"]
    assert expire(sm, "jobs", 200) == 3
    assert sm.list("jobs") == ["new", "top-level key", "young-orphan"]
    assert sm.list("jobs/new/ret") == ["web1"]
    assert expire(sm, "jobs", 200) == 0  # nothing left that old
    assert expire(sm, "nothing/here", 10**12) == 0


def test_a_retried_expire_removes_nothing_written_since():
    sm = KVStateMachine()
    store(sm, "jobs/a", "jid", b"x", ts=100)
    assert expire(sm, "jobs", 150, client="m1:w", seq=1) == 1
    store(sm, "jobs/b", "jid", b"x", ts=120)
    assert expire(sm, "jobs", 150, client="m1:w", seq=1) == 1  # the first answer, no apply
    assert sm.list("jobs") == ["b"]


@pytest.mark.parametrize(
    "raw",
    [
        [UNION, "b", "k", msgpack.packb({"not": "a list"}), 0, "c", 1],
        [UNION, "b", "k", msgpack.packb(["ok", 3]), 0, "c", 1],
        [UNION, "b", None, msgpack.packb(["ok"]), 0, "c", 1],
        [EXPIRE, "b", None, msgpack.packb("soon"), 0, "c", 1],
        [EXPIRE, "b", None, b"\xc1", 0, "c", 1],
        [EXPIRE, "b", "k", msgpack.packb(1), 0, "c", 1],
        [EXPIRE, "", None, msgpack.packb(1), 0, "c", 1],  # never the root: every bank
        [EXPIRE, "/", None, msgpack.packb(True), 0, "c", 1],
    ],
)
def test_a_malformed_union_or_expire_is_refused_and_changes_nothing(raw):
    sm = KVStateMachine()
    store(sm, "b/x", "k", b"v")
    with pytest.raises(ValueError, match="malformed"):
        sm.apply(msgpack.packb(raw, use_bin_type=True))
    assert sm.list("b") == ["x"] and sm.applied_commands == 1


def _contents(sm):
    return sorted(sm.walk())


def test_a_bank_flushed_then_written_again_is_in_the_tree_not_in_a_detached_copy():
    sm = KVStateMachine()
    store(sm, "minions/web1", "grains", b"old")
    assert sm.fetch("minions/web1", "grains") == b"old"  # the bank's node is known now
    assert flush(sm, "minions")  # removes minions and minions/web1
    store(sm, "minions/web1", "grains", b"new")
    assert _contents(sm) == [("minions/web1", "grains", b"new", 1)]
    assert sm.list("minions") == ["web1"]
    again = KVStateMachine()
    again.restore(sm.snapshot())
    assert _contents(again) == _contents(sm)


def test_a_bank_expired_then_written_again_is_in_the_tree():
    sm = KVStateMachine()
    store(sm, "jobs/j1/ret", "web1", b"x", ts=100)
    assert expire(sm, "jobs", 200) == 1
    store(sm, "jobs/j1/ret", "web2", b"y", ts=300)
    assert _contents(sm) == [("jobs/j1/ret", "web2", b"y", 300)]


def test_writes_after_a_restore_go_into_the_restored_tree():
    other = KVStateMachine()
    store(other, "minions/web1", "grains", b"theirs")
    sm = KVStateMachine()
    store(sm, "minions/web1", "grains", b"mine")
    sm.restore(other.snapshot())
    store(sm, "minions/web1", "pillar", b"p")
    assert _contents(sm) == [
        ("minions/web1", "grains", b"theirs", 1),
        ("minions/web1", "pillar", b"p", 1),
    ]
    sm.restore(b"")  # the empty state
    store(sm, "minions/web1", "pillar", b"q")
    assert _contents(sm) == [("minions/web1", "pillar", b"q", 1)]


def test_many_bank_names_stay_correct_past_the_remembered_limit(monkeypatch):
    monkeypatch.setattr("saltext_raft.kv.machine.MAX_BANK_NAMES", 3)
    sm = KVStateMachine()
    for i in range(10):
        store(sm, f"b{i % 5}/x", f"k{i}", b"v")
    flush(sm, "b1")
    store(sm, "b1/x", "late", b"w")
    assert _contents(sm) == sorted(
        [(f"b{i % 5}/x", f"k{i}", b"v", 1) for i in range(10) if i % 5 != 1]
        + [("b1/x", "late", b"w", 1)]
    )
