"""Where the replicated job cache keeps a job, and which names it accepts.

Lives here: the bank and key names of the job cache in the replicated cache, and the checks
of a job id and a minion id before either becomes part of a bank name. Must not live here:
reads and writes (:mod:`.store`), Salt.

Layout (banks of the replicated cache; the local copy stores them like any other bank)::

    saltext_raft_jobs/<jid>          jid      {"nocache": bool, "master": <id>}  (prep_jid)
                                     load     the publish load (save_load; the first one kept)
                                     minions  sorted list of targeted minions (save_minions)
                                     endtime  the end time (update_endtime)
    saltext_raft_jobs/<jid>/ret      <minion id>  {"return", "retcode", "success", "out"}
    saltext_raft_thorium             register  Thorium's register (save_reg/load_reg)

A job's age, for retention, is the time of its first write (the oldest ``updated`` among the
job bank's own keys, as the proposing master stamped it; see ``kv.machine.EXPIRE``).

Why the names are checked here, not only by the cache: a job id and a minion id come from the
network (a minion chooses the ``jid`` and, on 3008, the ``resource_id`` of its returns). They
become parts of bank names, so anything that could name another place ("../", "/", NUL, an
empty or huge name) is refused before a write is built, with a reason, and without touching
any other job.
"""

from __future__ import annotations

import re

#: Top bank of the job cache; nothing else writes below it.
JOBS_BANK = "saltext_raft_jobs"
#: Bank of Thorium's register (``save_reg``/``load_reg``) and its one key.
REG_BANK = "saltext_raft_thorium"
REG_KEY = "register"
#: Keys of a job's bank.
JID_KEY = "jid"
LOAD_KEY = "load"
MINIONS_KEY = "minions"
ENDTIME_KEY = "endtime"
#: Sub-bank of a job's bank holding one key per minion that returned.
RETURNS = "ret"

#: Salt's job id: 20 digits (``%Y%m%d%H%M%S%f``), with ``unique_jid`` an ``_`` and a suffix
#: (the master's pid). Stricter than ``salt.utils.jid.is_jid``, which accepts any suffix.
JID_RE = re.compile(r"\A[0-9]{20}(?:_[A-Za-z0-9_-]{1,64})?\Z")
#: Longest minion id in bytes (UTF-8): it is a file name ``<id>.p`` in the ``localfs`` copy,
#: and Linux refuses names longer than 255 bytes.
MAX_MINION_ID_BYTES = 253
#: Characters of an error message that quote a refused value.
SHOWN = 80


class BadJobName(ValueError):
    """A job id or minion id the job cache refuses; the message says why."""


def shown(value) -> str:
    """``value`` for a log line or an error: its repr, cut to :data:`SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def check_jid(jid) -> str:
    """Return ``jid`` if it is a job id this cache keeps, else raise :class:`BadJobName`."""
    if not isinstance(jid, str) or not JID_RE.match(jid):
        raise BadJobName(
            f"job id {shown(jid)} is not a Salt job id (20 digits, optionally '_' and up to "
            "64 letters, digits, '_' or '-')"
        )
    return jid


def check_minion_id(mid) -> str:
    """Return ``mid`` if it can name a minion's return, else raise :class:`BadJobName`."""
    if not isinstance(mid, str) or not mid:
        raise BadJobName(f"minion id {shown(mid)} is not a non-empty string")
    if mid in (".", "..") or any(c in mid for c in "/\\\0"):
        raise BadJobName(f"minion id {shown(mid)} would name a path ('/', '\\\\', NUL, '..')")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in mid):
        raise BadJobName(f"minion id {shown(mid)} contains control characters")
    if len(mid.encode("utf-8", "surrogatepass")) > MAX_MINION_ID_BYTES:
        raise BadJobName(f"minion id {shown(mid)} is longer than {MAX_MINION_ID_BYTES} bytes")
    return mid


def job_bank(jid: str) -> str:
    return f"{JOBS_BANK}/{jid}"


def returns_bank(jid: str) -> str:
    return f"{JOBS_BANK}/{jid}/{RETURNS}"
