"""A linearizability checker for key/value histories (Wing & Gong search, Lowe's memoization).

A history is a list of operations, each with the time it was invoked and the time its answer
arrived (``None`` when no answer ever arrived: the client timed out or crashed, so the
operation may or may not have taken effect). The history is linearizable if there is a total
order of the operations that (a) respects real time — an operation that returned before
another was invoked comes first — and (b) is a legal sequential history of a key/value store:
every read returns the value of the latest write before it.

Operations on different keys commute, so the history is split per key (P-compositionality,
as porcupine does) and each key is searched separately: depth-first over which pending
operation to linearize next, memoizing (set of linearized operations, store value) states
already explored. Unanswered operations may be linearized anywhere after their invocation, or
left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

INF = float("inf")


@dataclass(frozen=True)
class Op:
    client: str
    kind: str  # "put", "get" or "delete"
    key: str
    call: float
    ret: float | None  # None: no answer (may or may not have happened)
    value: object = None  # put: the value written; get: the value read (None = missing)

    @property
    def end(self) -> float:
        return INF if self.ret is None else self.ret


@dataclass
class Result:
    ok: bool
    key: str | None = None
    explored: int = 0
    ops: list[Op] = field(default_factory=list)

    def describe(self) -> str:
        if self.ok:
            return "linearizable"
        lines = [f"not linearizable on key {self.key!r}; its operations:"]
        for op in sorted(self.ops, key=lambda o: o.call):
            ret = "—" if op.ret is None else f"{op.ret:.3f}"
            lines.append(f"  [{op.call:.3f} .. {ret}] {op.client} {op.kind} {op.value!r}")
        return "\n".join(lines)


def _step(state, op: Op):
    """Apply ``op`` to the model; returns (legal, new_state)."""
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    if op.ret is None:
        return True, state  # an unanswered read constrains nothing
    return op.value == state, state


def check_key(ops: list[Op], initial=None, budget: int = 2_000_000) -> tuple[bool, int]:
    """Search one key's history. Returns (linearizable, states explored).

    Raises RuntimeError if the search exceeds ``budget`` states (report, don't guess).
    """
    ops = sorted(_unobserved_dropped(ops), key=lambda o: o.call)
    n = len(ops)
    must = 0  # bitmask of operations that must be linearized (answered ones)
    for i, op in enumerate(ops):
        if op.ret is not None:
            must |= 1 << i
    seen: set[tuple[int, object]] = set()
    explored = 0
    stack = [(0, initial)]
    while stack:
        done, state = stack.pop()
        if done & must == must:
            return True, explored
        key = (done, _hashable(state))
        if key in seen:
            continue
        seen.add(key)
        explored += 1
        if explored > budget:
            raise RuntimeError(f"linearizability search exceeded {budget} states")
        # an operation can go next only if no other remaining answered operation returned
        # before it was invoked
        min_end = INF
        for i in range(n):
            if not done >> i & 1 and ops[i].ret is not None and ops[i].ret < min_end:
                min_end = ops[i].ret
        for i in range(n):
            if done >> i & 1:
                continue
            op = ops[i]
            if op.call > min_end:
                break  # sorted by call: nothing later can go next either
            legal, new_state = _step(state, op)
            if legal:
                stack.append((done | 1 << i, new_state))
    return False, explored


def _unobserved_dropped(ops: list[Op]) -> list[Op]:
    """Leave out unanswered operations that cannot matter, before the search sees them.

    Each unanswered write may be placed anywhere after its invocation or left out, so k of
    them multiply the states by up to 2**k; a cluster that is down for a while leaves many.
    An unanswered write whose value no answered read returned can always be left out: if an
    order places it, the reads between it and the next write would return its value, and
    none did, so there are none, and removing it changes no read. (A delete writes ``None``,
    the value of a missing key.) Unanswered reads constrain nothing. Sound for any values,
    not only unique ones; the answered operations are all kept.
    """
    seen = {_hashable(op.value) for op in ops if op.kind == "get" and op.ret is not None}
    keep = []
    for op in ops:
        if op.ret is None:
            if op.kind == "get":
                continue
            written = op.value if op.kind == "put" else None
            if _hashable(written) not in seen:
                continue
        keep.append(op)
    return keep


def _hashable(v):
    return v if isinstance(v, (str, bytes, int, float, type(None), tuple)) else repr(v)


def check(history: list[Op], initial=None) -> Result:
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    total = 0
    for key, ops in sorted(by_key.items()):
        ok, explored = check_key(ops, initial)
        total += explored
        if not ok:
            return Result(False, key, total, ops)
    return Result(True, None, total)
