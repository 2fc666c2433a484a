"""Salt's job cache contract over the replicated cache: the functions the master, the ``jobs``
runner and the client call on ``master_job_cache`` (``returners/raft.py`` passes them the
master opts).

Lives here: ``prep_jid``, ``returner``, ``save_load``, ``save_minions``, ``get_load``,
``get_jid``, ``get_fun``, ``get_jids``, ``get_jids_filter``, ``update_endtime``,
``get_endtime``, ``clean_old_jobs``, ``save_reg``, ``load_reg``. Must not live here: bank
names and name checks (:mod:`.layout`), the engine socket and the local copy
(``integration/cachedriver``, the one module of the replicated cache this one uses).

Theory of operation
-------------------
Writes are replicated cache writes: committed through the local engine, answered once this
master's local copy shows them; writes that arrive together from many workers share one log
entry (the cache service's batching), which is what a burst of returns needs. Reads come from
this master's local copy, never from the leader, and wait only for the copy to have caught up
after an engine start.

- **Job ids are claimed through the log.** ``prep_jid`` without a job id generates one and
  adds the job's ``jid`` key with a conditional write (``cache.add``): of two masters (or
  threads) that generate the same id in the same microsecond, the log orders the two adds and
  only the first one stores; the other master sees ``False`` and generates another id.
- **First write wins where Salt expects a single value.** A minion's return for a job is kept
  once (a second one, e.g. a retry after a timeout, changes nothing and is logged as local_cache
  does), and a job's load is kept once: Salt's ``store_job`` calls ``save_load`` with every
  return's load for job caches other than ``local_cache``, which would otherwise replace the
  publish load with a minion's return.
- **Minion lists are merged by the state machine** (``cache.union``): several masters add to
  one job's list at once (a publish, a syndic, Salt 3008's cluster mirroring a peer's job)
  and none of their names may be lost to a read-modify-write race.
- **Retention has one clock: the proposer's.** ``clean_old_jobs`` picks the cut-off ``now -
  keep_jobs_seconds`` on the master that runs it and commits "remove every job first written
  before the cut-off" (``cache.expire``); every master removes the same jobs whatever its own
  clock says. It proposes only when its local copy holds a job older than the cut-off.
- **Most writes of a return are skipped locally.** ``store_job`` calls ``prep_jid``,
  ``save_load`` and ``returner`` for each return; the first two only write when this master's
  copy does not show the job yet, so a return usually costs one replicated write. On Salt
  3008 with ``cluster_id`` set, every peer also stores every return it hears about; a return
  already in the local copy is not written again.
"""

from __future__ import annotations

import bisect
import logging
import time

import salt.utils.jid
import salt.utils.job
import salt.utils.minions
from salt.exceptions import SaltCacheError

from saltext_raft.jobs import layout
from saltext_raft.jobs.layout import BadJobName
from saltext_raft.replicated import driver as _cache

log = logging.getLogger(__name__)

#: Job ids ``prep_jid`` generates before it gives up (each one taken by another master).
CLAIM_TRIES = 5
#: Fields of a minion's return load that the job cache keeps.
RETURN_FIELDS = ("return", "retcode", "success")


def _refused(what: str, exc: Exception) -> SaltCacheError:
    return SaltCacheError(f"raft job cache: {what} refused: {exc}")


def _jid(jid, what: str) -> str:
    try:
        return layout.check_jid(jid)
    except BadJobName as exc:
        raise _refused(what, exc) from None


def _checked_jid(jid, what: str):
    """``jid`` if valid, else None after one error line. For the writes Salt's ``store_job``
    makes with the job id a minion sent (``save_load``, ``update_endtime``): raising would
    make Salt log a stack trace at critical level for every such return."""
    try:
        return layout.check_jid(jid)
    except BadJobName as exc:
        log.error("saltext-raft jobs: %s refused: %s", what, exc)
        return None


# --------------------------------------------------------------------------------------------
# writes
# --------------------------------------------------------------------------------------------
def prep_jid(opts: dict, nocache: bool = False, passed_jid=None) -> str:
    """A job id for a new job, claimed through the log (unique across masters), or
    ``passed_jid`` recorded as a job if this master's copy does not know it yet."""
    record = {"nocache": bool(nocache), "master": opts.get("id")}
    if passed_jid:
        # Salt passes a minion's job id here for every return whose id ``salt.utils.jid.is_jid``
        # accepts (any suffix after '_'), and the publisher's --jid: refuse with one error line.
        # The publisher answers "Master failed to assign jid" to None; a raise would be logged
        # at critical level with a stack trace for every such return.
        jid = _checked_jid(passed_jid, "prep_jid")
        if jid is None:
            return None
        if not _cache.contains(opts, layout.job_bank(jid), layout.JID_KEY):
            _cache.add(opts, layout.job_bank(jid), layout.JID_KEY, record)
        return jid
    for _ in range(CLAIM_TRIES):
        jid = salt.utils.jid.gen_jid(opts)
        if _cache.add(opts, layout.job_bank(_jid(jid, "prep_jid")), layout.JID_KEY, record):
            return jid
        log.debug("saltext-raft jobs: job id %s was taken by another master; another one", jid)
    raise SaltCacheError(
        f"raft job cache: prep_jid found {CLAIM_TRIES} job ids in a row taken by other masters"
    )


def returner(opts: dict, load: dict):
    """Keep one minion's return for a job. Returns False when it is refused (a bad job id or
    minion id: logged with the reason) or is a second return of that minion for that job."""
    if not isinstance(load, dict):
        log.error("saltext-raft jobs: refused a return that is not a dict: %s", layout.shown(load))
        return False
    if load.get("jid") == "req":
        load["jid"] = prep_jid(opts, nocache=load.get("nocache", False))
    try:
        jid = layout.check_jid(load.get("jid"))
        mid = layout.check_minion_id(load.get("id"))
    except BadJobName as exc:
        log.error(
            "saltext-raft jobs: refused a return from minion %s for job %s: %s",
            layout.shown(load.get("id")),
            layout.shown(load.get("jid")),
            exc,
        )
        return False
    job = _cache.fetch(opts, layout.job_bank(jid), layout.JID_KEY)
    if isinstance(job, dict) and job.get("nocache"):
        return None
    record = {key: load[key] for key in RETURN_FIELDS if key in load}
    if "out" in load:
        record["out"] = load["out"]
    bank = layout.returns_bank(jid)
    if _cache.contains(opts, bank, mid):
        _log_duplicate(opts, jid, mid, record)
        return False
    try:
        stored = _cache.add(opts, bank, mid, record)
    except SaltCacheError as exc:
        raise SaltCacheError(
            f"raft job cache: the return of minion {mid} for job {jid} was not stored: {exc}"
        ) from None
    if not stored:
        _log_duplicate(opts, jid, mid, record)
        return False
    return None


def _log_duplicate(opts: dict, jid: str, mid: str, record: dict) -> None:
    """As ``local_cache``: a second, identical return is a retry (debug); a differing one is
    worth a warning (two minions with one id, or a replay)."""
    kept = _cache.fetch(opts, layout.returns_bank(jid), mid)
    if kept == record:
        log.debug("saltext-raft jobs: duplicate return from %s for job %s ignored", mid, jid)
        return
    log.warning(
        "saltext-raft jobs: a second, differing return from minion %s for job %s was ignored "
        "(the first one is kept); two minions may share this id",
        mid,
        jid,
    )


def save_load(opts: dict, jid, clear_load, minions=None):
    """Keep the load of job ``jid`` (the first one; see the module docstring) and, when it has
    a target, merge the targeted minions into the job's minion list. A malformed ``jid`` is
    logged and refused (False): Salt passes the job id of every minion return here.

    A minion's return (a load with ``return``: what ``store_job`` passes) names the job's
    minions only when it became the job's load (a standalone ``req`` job, or a job id this
    cache did not know, as local_cache): its ``tgt`` is the minion's to write, and for a
    published job it would add every minion it matches and cost a target evaluation on the
    master per return."""
    jid = _checked_jid(jid, "save_load")
    if jid is None:
        return False
    bank = layout.job_bank(jid)
    stored = False
    if not _cache.contains(opts, bank, layout.LOAD_KEY):
        stored = _cache.add(opts, bank, layout.LOAD_KEY, clear_load)
    if isinstance(clear_load, dict) and "return" in clear_load and not stored:
        return None
    if isinstance(clear_load, dict) and clear_load.get("tgt"):
        if minions is None:
            found = salt.utils.minions.CkMinions(opts).check_minions(
                clear_load["tgt"], clear_load.get("tgt_type", "glob")
            )
            minions = found["minions"]
        save_minions(opts, jid, minions)
    return None


def save_minions(opts: dict, jid, minions, syndic_id=None):  # pylint: disable=unused-argument
    """Merge ``minions`` into job ``jid``'s list. ``syndic_id`` is accepted and not kept apart:
    ``get_load`` reports the union of every list, as ``local_cache`` does."""
    jid = _checked_jid(jid, "save_minions")
    if jid is None:
        return False
    names = [m for m in (minions or []) if isinstance(m, str)]
    _cache.union(opts, layout.job_bank(jid), layout.MINIONS_KEY, names)
    return None


def update_endtime(opts: dict, jid, endtime):
    jid = _checked_jid(jid, "update_endtime")
    if jid is None:
        return False
    _cache.store(opts, layout.job_bank(jid), layout.ENDTIME_KEY, endtime)
    return None


def clean_old_jobs(opts: dict, *, now=None) -> int:
    """Remove the jobs first written more than ``keep_jobs_seconds`` ago, on every master (see
    the module docstring). Returns how many were removed (0 when nothing was proposed)."""
    keep = salt.utils.job.get_keep_jobs_seconds(opts)
    if not keep:
        return 0
    cutoff = int((time.time() if now is None else now) - keep)
    if not _cache.caught_up(opts):
        # Salt's maintenance loop calls this at once after a start: do not hold it up for
        # raft_cache_timeout while the copy catches up; the next call (loop_interval) cleans.
        log.debug("saltext-raft jobs: local copy not caught up yet; old jobs cleaned later")
        return 0
    try:
        # Oldest job ids first: when something is old enough, the first jobs usually say so.
        jids = sorted(_cache.list_(opts, layout.JOBS_BANK))
        if not any(_older(opts, jid, cutoff) for jid in jids):
            return 0
        removed = _cache.expire(opts, layout.JOBS_BANK, cutoff)
    except SaltCacheError as exc:
        # Salt's maintenance process calls this every loop_interval: say why, try next time.
        log.warning("saltext-raft jobs: old jobs not cleaned this time: %s", exc)
        return 0
    log.info("saltext-raft jobs: removed %d jobs first written before %d", removed, cutoff)
    return removed


def _older(opts: dict, jid: str, cutoff: int) -> bool:
    """Whether this master's copy shows job ``jid`` as one an expire with ``cutoff`` removes
    (the state machine's rule, ``KVStateMachine.expired``, read from the local copy)."""
    bank = layout.job_bank(jid)
    times = [_cache.updated(opts, bank, key) for key in _keys(opts, bank)]
    times = [t for t in times if t is not None]
    if not times:  # no key of its own: aged by its returns
        ret = layout.returns_bank(jid)
        times = [t for t in (_cache.updated(opts, ret, k) for k in _keys(opts, ret)) if t]
    return not times or min(times) < cutoff


def _keys(opts: dict, bank: str) -> list[str]:
    return [k for k in _cache.list_(opts, bank) if _cache.contains(opts, bank, k)]


def save_reg(opts: dict, data) -> None:
    _cache.store(opts, layout.REG_BANK, layout.REG_KEY, data)


# --------------------------------------------------------------------------------------------
# reads (this master's local copy)
# --------------------------------------------------------------------------------------------
def _valid(jid) -> bool:
    try:
        layout.check_jid(jid)
    except BadJobName:
        return False
    return True


def get_load(opts: dict, jid) -> dict:
    """The job's load with ``Minions`` (the merged minion list) added; {} if unknown."""
    if not _valid(jid):
        return {}
    bank = layout.job_bank(jid)
    load = _cache.fetch(opts, bank, layout.LOAD_KEY)
    if not isinstance(load, dict) or not load:
        return {}
    minions = _cache.fetch(opts, bank, layout.MINIONS_KEY)
    if minions:
        load["Minions"] = sorted(minions)
    return load


def get_jid(opts: dict, jid) -> dict:
    """``{minion id: {"return": ..., "retcode": ..., "success": ..., "out": ...}}``."""
    if not _valid(jid):
        return {}
    bank = layout.returns_bank(jid)
    ret = {}
    for mid in _cache.list_(opts, bank):
        record = _cache.fetch(opts, bank, mid)
        if not isinstance(record, dict) or "return" not in record:
            record = {"return": record}
        ret[mid] = record
    return ret


def _loads(opts: dict):
    """(jid, load) of every job this master's copy holds a load for, oldest job id first."""
    for jid in sorted(_cache.list_(opts, layout.JOBS_BANK)):
        if not _valid(jid):
            continue
        load = _cache.fetch(opts, layout.job_bank(jid), layout.LOAD_KEY)
        if isinstance(load, dict) and load:
            yield jid, load


def get_fun(opts: dict, fun) -> dict:
    """``{minion id: its return record, with "jid"}`` of the latest job (by job id) in which
    each minion returned for function ``fun``."""
    ret = {}
    for jid, load in _loads(opts):
        if load.get("fun") != fun:
            continue
        for mid, record in get_jid(opts, jid).items():
            ret[mid] = dict(record, jid=jid)
    return ret


def get_jids(opts: dict) -> dict:
    ret = {}
    for jid, load in _loads(opts):
        ret[jid] = salt.utils.jid.format_jid_instance(jid, load)
        if opts.get("job_cache_store_endtime"):
            endtime = get_endtime(opts, jid)
            if endtime:
                ret[jid]["EndTime"] = endtime
    return ret


def get_jids_filter(opts: dict, count, filter_find_job=True) -> list:
    """The ``count`` most recent jobs (by job id), oldest first, as ``local_cache`` lists
    them; ``saltutil.find_job`` jobs left out unless ``filter_find_job`` is false."""
    keys: list = []
    ret: list = []
    for jid, load in _loads(opts):
        job = salt.utils.jid.format_jid_instance_ext(jid, load)
        if filter_find_job and job.get("Function") == "saltutil.find_job":
            continue
        i = bisect.bisect(keys, jid)
        if len(keys) == count and i == 0:
            continue
        keys.insert(i, jid)
        ret.insert(i, job)
        if len(keys) > count:
            del keys[0]
            del ret[0]
    return ret


def get_endtime(opts: dict, jid):
    """The job's end time, or False if none was stored (as ``local_cache``)."""
    if not _valid(jid):
        return False
    endtime = _cache.fetch(opts, layout.job_bank(jid), layout.ENDTIME_KEY)
    return endtime if endtime not in ({}, None) else False


def load_reg(opts: dict) -> dict:
    """Thorium's register, or {} if none was saved."""
    data = _cache.fetch(opts, layout.REG_BANK, layout.REG_KEY)
    return data if data is not None else {}
