"""What a node id may look like: the one rule every edge checks (config, JOIN, admin, runners).

Lives here: :data:`MAX_NODE_ID_LEN`, the allowed characters and :func:`check_node_id`. Must not
live here: where ids come from (the edges call this) or how they are framed (``transport``).

A node id is a Salt master id, which Salt derives from the host name (``<fqdn>_master``) or an
IP address (Salt's own clustering requires the id to be the master's address). So: 1 to
:data:`MAX_NODE_ID_LEN` characters of letters, digits and ``. _ - : @``, with at least one letter
or digit. No whitespace or control characters (ids go into log lines), no ``/`` or ``\\`` (ids
name files and cache keys), nothing a terminal or a shell would interpret. An id that breaks
the rule is refused where it enters, with a message saying why, and is never committed into
the membership (the core refuses it too, as the last line).
"""

from __future__ import annotations

import re

__all__ = ["MAX_NODE_ID_LEN", "InvalidNodeId", "check_node_id", "node_id_problem"]

#: Longest node id accepted, in characters (all of them ASCII, so also in bytes). Long enough
#: for a fully qualified host name with Salt's ``_master`` suffix in any real deployment;
#: short enough to keep every frame header and log line small.
MAX_NODE_ID_LEN = 128

_ALLOWED = re.compile(r"[A-Za-z0-9._:@-]+")
_ALNUM = re.compile(r"[A-Za-z0-9]")


class InvalidNodeId(ValueError):
    """A node id breaks the rule in this module; the message says which part."""


def node_id_problem(value) -> str:
    """Why ``value`` is not a valid node id ("" if it is)."""
    if not isinstance(value, str):
        return f"a node id must be a non-empty string, got {type(value).__name__}"
    if not value:
        return "a node id must be a non-empty string"
    if len(value) > MAX_NODE_ID_LEN:
        return f"a node id must be at most {MAX_NODE_ID_LEN} characters (got {len(value)})"
    if not _ALLOWED.fullmatch(value):
        bad = sorted({c for c in value if not _ALLOWED.fullmatch(c)})
        return (
            f"node id {value!r} has characters outside letters, digits and '._-:@': "
            f"{''.join(bad)!r}"
        )
    if not _ALNUM.search(value):
        return f"node id {value!r} must contain a letter or a digit"
    return ""


def check_node_id(value, what: str = "node id") -> str:
    """Return ``value`` if it is a valid node id, else raise :class:`InvalidNodeId`."""
    problem = node_id_problem(value)
    if problem:
        raise InvalidNodeId(f"{what}: {problem}" if what != "node id" else problem)
    return value
