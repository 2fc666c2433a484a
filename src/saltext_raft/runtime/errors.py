"""Errors the runtime's client API raises. Each says what was waited for and why it failed."""

from __future__ import annotations


class RaftRuntimeError(Exception):
    """Base class. ``code`` is a short machine-readable name (used on the control channel)."""

    code = "error"

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


class NoLeader(RaftRuntimeError):
    """No leader was known for the whole timeout (election in progress, or no quorum)."""

    code = "no_leader"


class CommitTimeout(RaftRuntimeError):
    """The request reached a leader but did not complete in time (no quorum, or leader lost)."""

    code = "timeout"


class Rejected(RaftRuntimeError):
    """The leader refused the request (e.g. an invalid membership change)."""

    code = "rejected"


class Stopped(RaftRuntimeError):
    """The runtime is stopped (or stopped while the request waited)."""

    code = "stopped"


class StorageFailed(Stopped):
    """Storage failed: the node stopped to avoid voting twice or losing an acknowledged entry."""

    code = "storage_failed"


class ApplyHalted(Stopped):
    """The state machine could not apply a committed entry and said the node must stop rather
    than skip it (e.g. an entry written by a newer version): skipping it would leave this
    node's state different from every other node's."""


_BY_CODE = {
    c.code: c for c in (RaftRuntimeError, NoLeader, CommitTimeout, Rejected, Stopped, StorageFailed)
}


def from_dict(obj: dict) -> RaftRuntimeError:
    """Rebuild an error sent by another node (or over the control channel)."""
    cls = _BY_CODE.get(str(obj.get("code")), RaftRuntimeError)
    return cls(str(obj.get("message", "")))
