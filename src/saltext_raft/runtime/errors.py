"""The error codes of the runtime's client API, and for each whether its outcome is definite.

Lives here: every error class a client of the runtime (the cache driver, the control channel,
the runners) can receive, its machine-readable ``code``, and ``definite``: True when the error
proves that the request had no effect (a write was not and will never be applied: retrying it
cannot apply it twice), False when the outcome is unknown (it may have been applied, or may yet
be). docs/operations.md ("Client errors") lists them. Must not live here: when they are raised.
Each message says what was waited for and why it failed.
"""

from __future__ import annotations


class RaftRuntimeError(Exception):
    """Base class. ``code`` is a short machine-readable name (used on the control channel).
    An unexpected failure: outcome unknown."""

    code = "error"
    definite = False

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self), "definite": self.definite}


class NoLeader(RaftRuntimeError):
    """No leader was known for the whole timeout (election in progress, or no quorum).
    Definite: the request was never handed to a leader (a proposal still queued here, a
    membership request no node accepted)."""

    code = "no_leader"
    definite = True


class Unsent(NoLeader):
    """A request to another member (a forwarded membership change, a relayed cache write) was
    dropped by this node's transport instead of being sent: its queue to that member is full
    (the member is down, not connected, or far behind) or it has no address for it. Raised at
    once, so that the caller tries again or elsewhere instead of waiting for an answer that
    cannot come. Definite: nothing left this node. Clients see it as ``no_leader`` (the leader
    could not be reached)."""


class CommitTimeout(RaftRuntimeError):
    """The request reached a leader but did not complete in time (no quorum, or leader lost),
    or a snapshot replaced the entries that would have answered it. Indeterminate: the write
    may have been applied or may still be; read before retrying a write that is not
    idempotent."""

    code = "timeout"


class Rejected(RaftRuntimeError):
    """The leader (or the state machine) refused the request, e.g. an invalid membership change
    or a JOIN of a removed node. Definite: nothing was changed."""

    code = "rejected"
    definite = True


class Overloaded(RaftRuntimeError):
    """Too many of this node's proposals are waiting (``max_pending_proposals``): refused at
    once, before it was queued. Definite: back off and retry."""

    code = "overloaded"
    definite = True


class StaleRequest(Rejected):
    """A membership request was issued against another term or membership than the leader's
    now, or has expired: refused, so that a recorded request never replays as a new change.
    The node that issued it retries with a fresh binding (runtime.remote)."""

    code = "stale_request"


class Stopped(RaftRuntimeError):
    """The runtime is stopped (or stopped while the request waited). Indeterminate: a write
    already handed to the leader may still commit."""

    code = "stopped"


class StorageFailed(Stopped):
    """Storage failed: the node stopped to avoid voting twice or losing an acknowledged entry.
    Indeterminate, as ``stopped``."""

    code = "storage_failed"


class ApplyHalted(Stopped):
    """The state machine could not apply a committed entry and said the node must stop rather
    than skip it (e.g. an entry written by a newer version): skipping it would leave this
    node's state different from every other node's."""


#: Every code a client can receive, by code.
ERRORS = {
    c.code: c
    for c in (
        RaftRuntimeError,
        NoLeader,
        CommitTimeout,
        Rejected,
        Overloaded,
        StaleRequest,
        Stopped,
        StorageFailed,
    )
}


def from_dict(obj: dict) -> RaftRuntimeError:
    """Rebuild an error sent by another node (or over the control channel)."""
    cls = ERRORS.get(str(obj.get("code")), RaftRuntimeError)
    return cls(str(obj.get("message", "")))
