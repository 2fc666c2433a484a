"""Relayed writes: a follower's batch of cache writes joins the leader's next entry.

Lives here: the request a follower's cache service sends its leader's (:data:`RELAY_OP`), its
limits and its encoding both ways (:func:`request_body`, :func:`commands_of`,
:func:`reply_body`, :func:`reply_of`), and :func:`relayable`, the rule for which batches may
take this path. Must not live here: batching and answering workers (``replicated.service``),
sending and matching requests between members (``runtime.remote``).

**Why.** Every Raft entry costs each master a fixed amount of work however many writes it
carries: a log append with its fsync, two messages each way per follower, a Ready pass and a
transaction of the local copy. Measured with ``python -m saltext_raft bench cache --backend
sqlite`` (32 workers spread over 3 masters, 2026-12-07): about 0.84 ms of CPU per entry per
master against 18 µs per write. Without a relay each master proposes its own workers' batch
as an entry of its own (the core forwards a follower's proposal to the leader as it is), so a
round carries three entries of ~12 writes instead of one of ~36: with all 32 workers on one
master the cluster spent 0.175 ms of CPU per write instead of 0.265.

**How.** A follower sends its batch's commands to the leader's cache service, which adds them
to its own open batch, and answers ``(index, results)`` once the entry is applied there. The
follower then waits until it has applied ``index`` itself and its local copy shows it, and
answers its workers with the leader's results (the apply is deterministic: they are its own).

**Safety.** Only writes with a ``(client, seq)`` are relayed: the KV state machine applies such
a write at most once, so when a relay fails in a way that leaves its fate unknown (the leader
stepped down, the request was lost) the follower proposes the same commands itself
(``runtime.submit``) and a copy that did commit is not applied twice. The engine's own writes
carry no client id and are never relayed. A leader answers only current members
(``runtime.remote``) and checks every relayed command as it checks a worker's write; a relay
it cannot take (it is no longer the leader, an older version that does not know the request,
a command it refuses) is answered with an error before anything is queued, and the follower
proposes the batch itself.
"""

from __future__ import annotations

from saltext_raft.kv.machine import Command
from saltext_raft.runtime.errors import Rejected

#: The request a follower's cache service sends its leader's (``Remote.serve``).
RELAY_OP = "cache.relay"
#: Bytes of values and names (with their framing) a relay carries at most: a larger batch is
#: proposed by the follower itself (one such batch fills an entry alone, so it gains nothing
#: from the relay, and the request must stay far below the transport's frame limit).
MAX_RELAY_BYTES = 1 << 20
#: Commands in one relay at most (a bound on what a member may make the leader queue at once).
MAX_RELAY_COMMANDS = 4096


def relayable(cmds: list[Command], size: int) -> bool:
    """Whether a batch of ``cmds`` (``size`` bytes of values and names) may be relayed: each
    command has a client id (so it applies at most once), and the batch is small enough."""
    return (
        0 < len(cmds) <= MAX_RELAY_COMMANDS
        and size <= MAX_RELAY_BYTES
        and all(cmd.client for cmd in cmds)
    )


def request_body(cmds: list[Command]) -> dict:
    """The relay request of ``cmds``: each command as the tuple the entry encodes. No deadline:
    the leader gives relayed writes its own (``CacheService._serve_relay``), and the follower
    bounds its wait for the answer itself."""
    return {
        "op": RELAY_OP,
        "cmds": [[c.op, c.bank, c.key, c.value, c.ts, c.client, c.seq] for c in cmds],
    }


def commands_of(body: dict) -> list[list]:
    """The raw command lists of a relay request, in shape only (the service checks each
    command as it checks a worker's write). Any other field is ignored. Raises Rejected."""
    raw = body.get("cmds")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_RELAY_COMMANDS:
        raise Rejected(f"a relay carries 1 to {MAX_RELAY_COMMANDS} commands")
    for item in raw:
        if not isinstance(item, list) or len(item) != 7:
            raise Rejected("a relayed command is not a list of 7 fields")
    return raw


def reply_body(index: int, results: list) -> dict:
    return {"index": index, "results": results}


def reply_of(reply: object, count: int) -> tuple[int, list]:
    """``(index, results)`` of a leader's answer to a relay of ``count`` commands. Raises
    Rejected for an answer of the wrong shape."""
    if isinstance(reply, dict):
        index, results = reply.get("index"), reply.get("results")
        if type(index) is int and index > 0 and isinstance(results, list):
            if len(results) == count:
                return index, results
    raise Rejected(f"the leader answered a relay of {count} writes with {reply!r:.80}")
