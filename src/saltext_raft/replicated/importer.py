"""Copying an existing Salt cache into the replicated one (``cache: raft``).

Lives here: :func:`import_cache` (walk banks of a source driver, store what the replicated
cache lacks) and the command line ``python -m saltext_raft import``; the
``raft.import_cache`` runner calls the same function. Must not live here: the driver itself
(``replicated/driver.py``), anything that runs in the engine.

Why: a master switched from ``cache: localfs`` (or redis, consul...) to ``cache: raft`` starts
with an empty replicated cache. Minions refill grains and pillar on their next refresh, but mine
data, and anything runners stored with ``cache.store``, would be missing until then, on every
master. The import copies it once, through the cluster, so every master has it.

Rules:

- Only the banks asked for (default: the minion data banks found in the source): a master's
  ``cachedir`` also holds jobs, file lists and the engine's own log, which are not cache data.
- A key the replicated cache already has is left alone (it was written since the switch, so it
  is newer), unless ``overwrite`` is set. The cluster decides that when it applies the write (a
  conditional "add" command), so a key a minion writes while the import runs is kept too.
  Running the import twice copies nothing the second time.
- Values are copied as the source driver holds them, including Salt 3008's expiry envelope
  (``{"data": ..., "_expires": ...}``); entries that have already expired are skipped.
- A key the source cannot read is counted and named, and the import goes on. A write the cluster
  refuses (no quorum, engine down) stops the import: later writes would fail the same way. What
  was copied stays copied; running the import again resumes it.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import salt.cache
from salt.exceptions import SaltCacheError
from salt.exceptions import SaltException

from saltext_raft.replicated import config as cacheconfig
from saltext_raft.replicated import driver as cachedriver
from saltext_raft.replicated import keystore

#: Banks of minion data: Salt 3008 keeps ``grains``, ``pillar`` and ``mine`` per minion id;
#: Salt 3007 keeps ``minions/<id>`` (``data``, ``mine``). The default imports those present.
MINION_DATA_BANKS = ("grains", "pillar", "mine", "minions")
#: Top-level names under ``cachedir`` that belong to saltext-raft itself.
OWN_BANKS = ("saltext_raft", cacheconfig.DIR_NAME, keystore.MIRROR_PREFIX)
#: Writes in flight at a time: enough for the engine to batch them (one commit, one fsync per
#: batch), few enough not to crowd out the master's own workers.
DEFAULT_WORKERS = 8
#: Names of failed keys kept for the report (the count is always complete).
MAX_NAMED_FAILURES = 20


class ImportRefused(ValueError):
    """The import was asked for something it must not do (the message says what and why)."""


#: Salt 3008's ``Cache.fetch`` unwraps expiry envelopes (and hides expired entries); 3007's
#: returns what the driver holds.
_FETCH_UNWRAPS = hasattr(salt.cache.Cache, "clean_expired")


def _raw_fetch(cache: salt.cache.Cache, bank: str, key: str):
    if _FETCH_UNWRAPS:
        return cache.modules[f"{cache.driver}.fetch"](bank, key, **cache.kwargs)
    return cache.fetch(bank, key)


def _expired(value, now: float) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"data", "_expires"}
        and isinstance(value["_expires"], (int, float))
        and value["_expires"] <= now
    )


def check_banks(opts: dict, banks) -> list[str]:
    """The banks to import, normalised; raises :class:`ImportRefused` for one that is not
    ordinary cache data."""
    out = []
    for bank in banks:
        if not isinstance(bank, str) or not bank.strip("/"):
            raise ImportRefused(f"bank {bank!r}: not a bank name")
        bank = bank.strip("/")
        top = bank.split("/", 1)[0]
        if top in OWN_BANKS:
            raise ImportRefused(f"bank {bank!r} belongs to saltext-raft itself; it is not imported")
        if top in keystore.REPLICATED_BANKS + keystore.LOCAL_BANKS and (
            cacheconfig.keys_driver_enabled(opts)
        ):
            raise ImportRefused(
                f"bank {bank!r} is the minion key store: import keys with "
                "'python -m saltext_raft keys import'"
            )
        if bank not in out:
            out.append(bank)
    return out


def source_cache(opts: dict, driver: str) -> salt.cache.Cache:
    if driver == cacheconfig.DRIVER_NAME:
        raise ImportRefused("the source driver cannot be 'raft': that is where the data goes")
    # A copy of the opts: the loader keeps the opts it was built with.
    return salt.cache.Cache(dict(opts, cache=driver))


def target_cache(opts: dict) -> salt.cache.Cache:
    if opts.get("cache") != cacheconfig.DRIVER_NAME:
        raise ImportRefused(
            f"this master has cache: {opts.get('cache')!r}; set cache: raft (on every master) "
            "and start the raft engine before importing"
        )
    return salt.cache.Cache(opts)


def _has_value(source: salt.cache.Cache, bank: str, key: str) -> bool:
    """Whether ``key`` of ``bank`` has a stored value, for a name that is also a sub-bank.
    Salt 3007's redis driver answers ``contains(bank, name)`` true for a sub-bank's name (its
    bank sets hold both) and ``fetch`` gives ``{}`` for a key that does not exist, so only
    ``updated`` (None for a key never stored) tells them apart. A driver without ``updated``
    is taken at its word."""
    if f"{source.driver}.updated" not in source.modules:
        return True
    return source.updated(bank, key) is not None


def _walk(source: salt.cache.Cache, bank: str):
    """(bank, key) of every key under ``bank``, sub-banks included, depth first. A name can be
    both a key and a sub-bank (localfs: ``x.p`` beside ``x/``)."""
    stack = [bank]
    while stack:
        current = stack.pop()
        names = sorted(set(source.list(current)))  # localfs lists x.p and x/ both as "x"
        banks = {name for name in names if source.contains(f"{current}/{name}")}
        for name in names:
            if source.contains(current, name) and (
                name not in banks or _has_value(source, current, name)
            ):
                yield current, name
        for name in reversed(names):
            if name in banks:
                stack.append(f"{current}/{name}")


def default_banks(source: salt.cache.Cache) -> list[str]:
    return [bank for bank in MINION_DATA_BANKS if source.contains(bank)]


def import_cache(
    opts: dict,
    banks=None,
    source_driver: str = "localfs",
    overwrite: bool = False,
    workers: int = DEFAULT_WORKERS,
    clock=time.time,
) -> dict:
    """Copy ``banks`` (default: :func:`default_banks`) from ``source_driver`` into the
    replicated cache of the master with ``opts``, ``workers`` writes in flight at a time.
    Returns the counts (``imported``, ``already_present``, ``expired``, ``unreadable``),
    ``banks`` and the names of unreadable keys. Raises :class:`ImportRefused` for a bad request
    and ``SaltCacheError`` when the cluster refuses a write (the counts so far are in its
    message)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        raise ImportRefused(f"workers must be a whole number from 1 to 64, not {workers!r}")
    target = target_cache(opts)
    source = source_cache(opts, source_driver)
    banks = check_banks(opts, banks) if banks else default_banks(source)
    report = {
        "banks": banks,
        "source": source_driver,
        "imported": 0,
        "already_present": 0,
        "expired": 0,
        "unreadable": 0,
        "unreadable_keys": [],
    }
    now = clock()
    failed: list[str] = []  # the first write the cluster refused, as a message
    in_flight: set[concurrent.futures.Future] = set()

    def settle(done) -> None:
        for fut in done:
            in_flight.discard(fut)
            name, stored, exc = fut.result()
            if exc is not None:
                if not failed:
                    failed.append(f"import stopped at {name}: {exc}")
            elif stored:
                report["imported"] += 1
            else:  # written by someone else between the check below and the add
                report["already_present"] += 1

    def store(sub, key, value):
        try:
            if overwrite:
                target.store(sub, key, value)
                return f"{sub}/{key}", True, None
            return f"{sub}/{key}", cachedriver.add(opts, sub, key, value), None
        except SaltCacheError as exc:
            return f"{sub}/{key}", False, exc

    # Each worker thread has its own connection to the engine (the driver keeps one per
    # thread), so up to ``workers`` writes share the engine's batches.
    with concurrent.futures.ThreadPoolExecutor(workers, "raft-import") as pool:
        for bank in banks:
            if failed:
                break
            for sub, key in _walk(source, bank):
                if failed:
                    break
                try:
                    value = _raw_fetch(source, sub, key)
                except (SaltException, OSError, ValueError) as exc:  # e.g. a torn file
                    report["unreadable"] += 1
                    if len(report["unreadable_keys"]) < MAX_NAMED_FAILURES:
                        report["unreadable_keys"].append(f"{sub}/{key}: {exc}")
                    continue
                if _expired(value, now):
                    report["expired"] += 1
                    continue
                # A local read that spares a write for what is already there (a second run);
                # the add itself decides, in the cluster, for keys written since this check.
                if not overwrite and target.contains(sub, key):
                    report["already_present"] += 1
                    continue
                in_flight.add(pool.submit(store, sub, key, value))
                if len(in_flight) >= workers:  # bounded: the source is read as fast as written
                    settle(
                        concurrent.futures.wait(
                            in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                        ).done
                    )
        settle(concurrent.futures.wait(in_flight).done)
    if failed:
        raise SaltCacheError(
            f"{failed[0]} (so far: {summary(report)}; run the import again once the engine "
            "runs and the cluster has a quorum: what is copied stays copied)"
        )
    return report


def summary(report: dict) -> str:
    return (
        f"{report['imported']} imported, {report['already_present']} already present, "
        f"{report['expired']} expired, {report['unreadable']} unreadable"
    )


def main(argv=None) -> int:
    """``python -m saltext_raft import [-c /etc/salt] [--bank B]...``: run
    once, on one master whose engine is up, after switching the masters to ``cache: raft``."""
    import argparse  # pylint: disable=import-outside-toplevel

    import salt.config  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(
        prog="python -m saltext_raft import",
        description="Copy an existing Salt cache (default: localfs in this master's cachedir) "
        "into the replicated raft cache. Keys the replicated cache already has are kept.",
    )
    parser.add_argument("-c", "--config-dir", default="/etc/salt")
    parser.add_argument(
        "--bank",
        action="append",
        dest="banks",
        help="a bank to import, with its sub-banks (repeatable; default: the minion data "
        f"banks present among {', '.join(MINION_DATA_BANKS)})",
    )
    parser.add_argument("--from", dest="source", default="localfs", help="source cache driver")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace keys the replicated cache already has"
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="writes in flight at a time"
    )
    args = parser.parse_args(argv)
    opts = salt.config.master_config(os.path.join(args.config_dir, "master"))
    try:
        report = import_cache(opts, args.banks, args.source, args.overwrite, args.workers)
    except ImportRefused as exc:
        parser.error(str(exc))
    except SaltCacheError as exc:
        print(f"import failed: {exc}")
        return 1
    where = opts["cachedir"] if args.source == "localfs" else f"the {args.source} cache"
    banks = ", ".join(report["banks"]) or "none found"
    print(f"from {where} (banks: {banks}): {summary(report)}")
    for line in report["unreadable_keys"]:
        print(f"  unreadable: {line}")
    return 2 if report["unreadable"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
