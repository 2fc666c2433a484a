"""Readable scenario scripts: input steps and the messages and state they must produce.

Each file in ``scenarios/`` is a list of commands (lines starting with ``> ``), each followed by
the output it must produce. Lines starting with ``#`` are comments. When behaviour changes on
purpose, regenerate the expected output with::

    SCENARIO_REWRITE=1 python -m pytest tests/unit/core/test_scenarios.py

and review the diff like any other change: it shows, message by message, what changed. Rewrite
mode is refused when ``CI`` is set: a leaked ``SCENARIO_REWRITE`` would otherwise make every
scenario pass by rewriting its expectations.

Commands: cluster IDS... [key=value config...] | campaign N | tick N [count] | propose N DATA |
conf N OP NODE | transfer N TARGET | read N CTX | snapshot N [keep] | deliver (one round) |
stabilize | elapse N [count] (tick N once, then stabilize; count times) | drop A B (A's
messages to B are lost) | isolate N | heal | crash N | restart N | add N (start a fresh, empty
node) | status N... | log N
"""

import os
import pathlib

import pytest

from saltext_raft.core import ConfChange
from saltext_raft.core import ConfOp
from saltext_raft.core import EntryKind
from saltext_raft.core import MsgType
from saltext_raft.core import RaftError
from tests.ci import in_ci
from tests.unit.core.cluster import Cluster

HERE = pathlib.Path(__file__).parent / "scenarios"
FILES = sorted(HERE.glob("*.txt"))


def fmt_entry(e):
    if e.kind == EntryKind.CONF:
        cc = ConfChange.decode(e.data)
        return f"{e.index}/{e.term} conf:{cc.op.value}{(' ' + cc.node_id) if cc.node_id else ''}"
    return f"{e.index}/{e.term} {e.data.decode(errors='replace')!r}"


def fmt_msg(m):
    s = f"{m.frm}->{m.to} {m.type.name} t{m.term}"
    t = m.type
    if t is MsgType.APPEND:
        s += f" prev={m.index}/{m.log_term} commit={m.commit}"
        if m.entries:
            s += " [" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    elif t is MsgType.APPEND_RESP:
        s += f" index={m.index}"
        if m.reject:
            s += f" reject hint={m.hint_index}/{m.hint_term}"
    elif t in (MsgType.VOTE, MsgType.PRE_VOTE):
        s += f" last={m.index}/{m.log_term}" + (" transfer" if m.context else "")
    elif t in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP):
        s += " rejected" if m.reject else " granted"
    elif t is MsgType.HEARTBEAT:
        s += f" commit={m.commit}" + (f" read={m.context.decode()}" if m.context else "")
    elif t is MsgType.HEARTBEAT_RESP:
        s += f" read={m.context.decode()}" if m.context else ""
    elif t is MsgType.SNAPSHOT:
        c = m.snapshot
        s += f" snap={c.meta.index}/{c.meta.term} bytes={c.offset}+{len(c.data)}/{c.total}"
    elif t is MsgType.SNAPSHOT_RESP:
        s += f" snap={m.log_term} acked={m.index}" + (" reject" if m.reject else "")
    elif m.context or m.index:
        s += f" index={m.index} ctx={m.context.decode(errors='replace')}"
    return s


def fmt_status(n):
    m = n.membership
    out = (
        f"{n.id}: {n.role.value} term={n.term} leader={n.leader or '-'} commit={n.commit_index}"
        f" applied={n.applied_index} last={n.last_index} voters={','.join(sorted(m.voters))}"
        f" learners={','.join(sorted(m.learners)) or '-'}"
    )
    if n.snapshot_meta.index:
        out += f" snapshot={n.snapshot_meta.index}"
    return out


class Runner:
    def __init__(self):
        self.c: Cluster | None = None
        self.isolated: set[str] = set()

    def run(self, line):
        cmd, *args = line.split()
        c = self.c
        if cmd == "cluster":
            ids = [a for a in args if "=" not in a]
            cfg = {}
            for a in args:
                if "=" in a:
                    k, v = a.split("=", 1)
                    cfg[k] = v == "true" if v in ("true", "false") else int(v)
            self.c = Cluster(ids=tuple(ids), **cfg)
            self.c.net.clear()
            return []
        if cmd == "deliver":
            todo, c.net = c.net, []
            out = [fmt_msg(m) for m in todo]
            seen = {nid: len(rs) for nid, rs in c.read_states.items()}
            for m in todo:
                if m.to in c.nodes:
                    c.nodes[m.to].step(m)
            c.process()
            for nid, rs in c.read_states.items():
                out += [
                    f"{nid}: read_state index={r.index} ctx={r.context.decode()}"
                    for r in rs[seen.get(nid, 0) :]
                ]
            return out
        if cmd == "stabilize":
            out = []
            for _ in range(100):
                if not c.net:
                    break
                out += self.run("deliver")
            return out
        if cmd == "elapse":
            out = []
            for _ in range(int(args[1]) if len(args) > 1 else 1):
                c.nodes[args[0]].tick()
                c.process()
                out += self.run("stabilize")
            return out
        if cmd == "drop":
            c.dropped.add((args[0], args[1]))
            return []
        if cmd == "isolate":
            for other in c.nodes:
                if other != args[0]:
                    c.dropped |= {(args[0], other), (other, args[0])}
            return []
        if cmd == "heal":
            c.dropped.clear()
            return []
        if cmd == "status":
            return [fmt_status(c.nodes[n]) for n in args]
        if cmd == "log":
            n = c.nodes[args[0]]
            return [fmt_entry(e) for e in n.entries(n.first_index, n.last_index + 1)] or ["(empty)"]
        if cmd == "crash":
            c.crash(args[0])
            return []
        try:
            if cmd == "campaign":
                c.nodes[args[0]].campaign()
            elif cmd == "tick":
                for _ in range(int(args[1]) if len(args) > 1 else 1):
                    c.nodes[args[0]].tick()
            elif cmd == "propose":
                c.nodes[args[0]].propose(args[1].encode())
            elif cmd == "conf":
                c.nodes[args[0]].propose_conf_change(ConfOp(args[1]), args[2], f"addr-{args[2]}")
            elif cmd == "transfer":
                c.nodes[args[0]].transfer_leader(args[1])
            elif cmd == "read":
                c.nodes[args[0]].read_index(args[1].encode())
            elif cmd == "snapshot":
                n = c.nodes[args[0]]
                keep = int(args[1]) if len(args) > 1 else 0
                snap = n.create_snapshot(n.applied_index, b"state@%d" % n.applied_index, keep=keep)
                c.disks[args[0]].snapshot = snap
            elif cmd == "restart":
                c.restart(args[0])
            elif cmd == "add":
                c.add_fresh(args[0])
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except RaftError as exc:
            c.process()
            return [f"error: {type(exc).__name__}: {exc}"]
        c.process()
        return []  # queued messages and read states show up when delivered


def parse(text):
    """-> list of (command, expected output lines), keeping comments for rewriting."""
    blocks = []
    for line in text.splitlines():
        if line.startswith("> "):
            blocks.append([line[2:], [], []])
        elif line.startswith("#") or not line.strip():
            if blocks:
                blocks[-1][2].append(line)
            else:
                blocks.append([None, [], [line]])
        else:
            blocks[-1][1].append(line)
    return blocks


def render(blocks, outputs):
    lines = []
    for (cmd, _, trailing), out in zip(blocks, outputs, strict=True):
        if cmd is not None:
            lines.append("> " + cmd)
            lines += out
        lines += trailing
    return "\n".join(lines).rstrip("\n") + "\n"


def rewrite_requested(env=os.environ) -> bool:
    """True when the expected outputs are to be rewritten; fails the test under CI."""
    if not env.get("SCENARIO_REWRITE"):
        return False
    if in_ci(env):
        pytest.fail(
            "SCENARIO_REWRITE is set while CI is: refusing to rewrite the expected outputs "
            "(every scenario would pass); unset SCENARIO_REWRITE"
        )
    return True


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path):
    blocks = parse(path.read_text())
    r = Runner()
    outputs = [r.run(cmd) if cmd is not None else [] for cmd, _, _ in blocks]
    if rewrite_requested():
        path.write_text(render(blocks, outputs))
        return
    for (cmd, expected, _), got in zip(blocks, outputs, strict=True):
        if cmd is not None:
            assert got == expected, f"{path.name}: > {cmd}"


def test_scenarios_exist():
    assert len(FILES) >= 5


def test_rewrite_mode_is_refused_under_ci():
    assert rewrite_requested({}) is False
    assert rewrite_requested({"SCENARIO_REWRITE": "1"}) is True
    with pytest.raises(pytest.fail.Exception, match="refusing to rewrite"):
        rewrite_requested({"SCENARIO_REWRITE": "1", "CI": "true"})
