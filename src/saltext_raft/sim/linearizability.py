"""A linearizability checker for key/value histories (Wing & Gong search, Lowe's memoization).

A history is a list of operations, each with the time it was invoked and the time its answer
arrived (``None`` when no answer ever arrived: the client timed out or crashed, so the
operation may or may not have taken effect). The history is linearizable if there is a total
order of the operations that (a) respects real time — an operation that returned before
another was invoked comes first — and (b) is a legal sequential history of a key/value store:
every read returns the value of the latest write before it, and every add ("store if absent")
answered that it stored exactly when the key was missing before it.

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
    kind: str  # "put", "add", "get" or "delete"
    key: str
    call: float
    ret: float | None  # None: no answer (may or may not have happened)
    value: object = None  # put, add: the value written; get: the value read (None = missing)
    result: object = None  # add: whether it stored (the key was missing); None if unanswered

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
            answer = f" -> {op.result!r}" if op.kind == "add" and op.ret is not None else ""
            lines.append(f"  [{op.call:.3f} .. {ret}] {op.client} {op.kind} {op.value!r}{answer}")
        return "\n".join(lines)


def _step(state, op: Op):
    """Apply ``op`` to the model; returns (legal, new_state)."""
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    if op.kind == "add":
        stores = state is None
        if op.ret is not None and op.result != stores:
            return False, state
        return True, op.value if stores else state
    if op.ret is None:
        return True, state  # an unanswered read constrains nothing
    return op.value == state, state


def check_key(ops: list[Op], initial=None, budget: int = 2_000_000) -> tuple[bool, int]:
    """Search one key's history. Returns (linearizable, states explored).

    Raises RuntimeError if the search exceeds ``budget`` states (report, don't guess).
    """
    seen = _values_read(ops)  # leaving out unanswered writes keeps every answered read
    ops, twins = _twins(sorted(_unobserved_dropped(ops, seen), key=lambda o: o.call), seen)
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
        tried = set()
        for i in range(n):
            if done >> i & 1:
                continue
            op = ops[i]
            if op.call > min_end:
                break  # sorted by call: nothing later can go next either
            twin = twins[i]
            if twin is not None:
                if twin in tried:
                    continue  # an earlier twin of this one is tried instead (see _twins)
                tried.add(twin)
            legal, new_state = _step(state, op)
            if legal:
                stack.append((done | 1 << i, new_state))
    return False, explored


#: The value, in the search, of every write whose value no answered read returned: which of
#: them is there makes no difference to any answered operation.
_UNSEEN = ("<a value no read returned>",)


def _values_read(ops: list[Op]) -> set:
    """The values answered reads returned (hashable)."""
    return {_hashable(op.value) for op in ops if op.kind == "get" and op.ret is not None}


def _twins(ops: list[Op], seen: set) -> tuple[list[Op], list]:
    """``ops`` with every unseen written value replaced by ``_UNSEEN``, and for each operation
    its class of twins (None: no twin): unanswered deletes are one class, unanswered puts of
    unseen values another, unanswered adds of unseen values a third. Twins have the same
    effect on the search's state and constrain nothing (no answer), so when several could go
    next, trying only the one invoked first is enough: an order that uses a later twin there
    stays legal with the earlier one in its place and the later one where the earlier one
    was, or left out (it was invoked later, so it may go anywhere the other went; every
    answered operation that returned before its invocation is already linearized, or it could
    not go next). k unanswered writes of one class then cost k + 1 subsets, not 2**k.
    """
    out, twins = [], []
    for op in ops:
        twin = None
        if op.ret is None:
            if op.kind == "delete":
                twin = "delete"
            elif op.kind in ("put", "add") and _hashable(op.value) not in seen:
                twin = op.kind
                op = Op(op.client, op.kind, op.key, op.call, op.ret, _UNSEEN, op.result)
        out.append(op)
        twins.append(twin)
    return out, twins


def _unobserved_dropped(ops: list[Op], seen: set) -> list[Op]:
    """Leave out unanswered operations that cannot matter, before the search sees them.

    Each unanswered write may be placed anywhere after its invocation or left out, so k of
    them multiply the states by up to 2**k; a cluster that is down for a while leaves many.
    Unanswered reads constrain nothing. An unanswered write ``w`` can be left out when no
    answered operation can have observed it: take an order that places ``w``, and the stretch
    after it up to the next operation that sets the value (the observers of ``w``).

    - A put or an add that stored wrote its value: no answered read returned that value, so
      no answered read is in the stretch. Answered adds there found the key present; they
      find it present without ``w`` too unless the key was missing before ``w``, so none may
      have answered at or after the moment ``w`` was invoked. (Unanswered adds there did
      nothing; the order leaves them out.) An add that stored nothing can always be left out.
    - A delete: no answered read returned "missing", and no answered add that stored answered
      at or after the moment ``w`` was invoked. Without ``w``, an unanswered add right after
      it may store nothing where it stored; then the next stretch keeps the older value,
      which no read saw if no answered read returned that add's value (required of every
      unanswered add).

    Each condition looks only at answered operations (and at which values answered reads
    returned), which leaving out unanswered ones does not change, so leaving out all that
    qualify at once is sound too. Sound for any values, not only unique ones.
    """
    # the latest answer of an answered add that stored / that found the key present
    stored_end = found_end = -INF
    for op in ops:
        if op.kind == "add" and op.ret is not None:
            if op.result:
                stored_end = max(stored_end, op.ret)
            else:
                found_end = max(found_end, op.ret)
    adds_unseen = all(
        _hashable(op.value) not in seen for op in ops if op.kind == "add" and op.ret is None
    )
    keep = []
    for op in ops:
        if op.ret is None:
            if op.kind == "get":
                continue
            if op.kind == "delete":
                if None not in seen and stored_end < op.call and adds_unseen:
                    continue
            elif _hashable(op.value) not in seen and found_end < op.call:
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
