"""One sync of the roots store: this master's trees into the Raft log (``salt-run
raft.sync_roots``, and the engine's periodic scan on a source master).

Lives here: :func:`sync` (scan, compare with the committed manifests, send the missing blobs
chunk by chunk, commit each changed manifest, remove blobs no manifest names) and
:class:`CacheStore` (the replicated cache calls it makes, through this master's ``raft`` cache
driver). Must not live here: reading trees (:mod:`.scan`), the receiving side (:mod:`.apply`),
name rules (:mod:`.layout`), Salt's loader.

Order, and why it is safe to stop anywhere: (1) scan every tree; anything refused, a master
that has not applied the committed roots yet (its sync would revert every master), or a
manifest too large for one log entry stops the sync before the first write; (2) for each
blob a manifest will name and the cluster lacks (no ``info`` key, or a chunk key missing):
its chunks, then its ``info``; (3) each changed manifest, one write per kind;
(4) the blobs no manifest names, removed. A sync stopped in (2) leaves blobs without ``info``
that receivers never read; the next sync sends them again and (4) removes them if unused. A
sync stopped in (3) or (4) leaves the cluster with manifests whose blobs are all present.

One source at a time: two masters syncing different trees at once would each remove the
other's new blobs in (4) and commit alternately; run the sync on one master (docs/roots.md).
"""

from __future__ import annotations

import logging
import time

from saltext_raft.roots import config as rootsconfig
from saltext_raft.roots import layout
from saltext_raft.roots import scan
from saltext_raft.roots.apply import load_record

log = logging.getLogger(__name__)


class SyncRefused(ValueError):
    """The sync sent nothing; the message (and ``refused``) say why."""

    def __init__(self, message: str, refused=()):
        super().__init__(message)
        self.refused = list(refused)


class CacheStore:
    """The replicated cache as the sync uses it: this master's ``raft`` cache driver."""

    def __init__(self, opts: dict):
        # pylint: disable=import-outside-toplevel
        from saltext_raft.replicated import driver

        self._opts = opts
        self._driver = driver

    def fetch(self, bank: str, key: str):
        return self._driver.fetch(self._opts, bank, key)

    def contains(self, bank: str, key: str) -> bool:
        return self._driver.contains(self._opts, bank, key)

    def list_(self, bank: str) -> list:
        return self._driver.list_(self._opts, bank)

    def store(self, bank: str, key: str, value) -> None:
        self._driver.store(self._opts, bank, key, value)

    def flush(self, bank: str, key=None) -> None:
        self._driver.flush(self._opts, bank, key)


def _scan_all(trees: dict, max_file_bytes: int) -> dict:
    """``{kind: {env: ScanResult}}``; raises :class:`SyncRefused` listing every refusal."""
    out: dict = {}
    refused = []
    for kind, envs in trees.items():
        for env, root in envs.items():
            try:
                result = scan.scan_tree(root, max_file_bytes)
            except FileNotFoundError:
                refused.append(
                    (
                        f"{kind}/{env}",
                        f"{root} does not exist (a missing tree would delete "
                        "every replicated file of this environment on every master)",
                    )
                )
                continue
            except OSError as exc:
                refused.append((f"{kind}/{env}", f"{root} cannot be read: {exc}"))
                continue
            refused.extend((f"{kind}/{env}/{p}", why) for p, why in result.refused)
            out.setdefault(kind, {})[env] = result
    if refused:
        raise SyncRefused(
            f"{len(refused)} paths refused; nothing was sent (first: {refused[0][0]}: "
            f"{refused[0][1]})",
            refused,
        )
    return out


def _diff(kind: str, old: dict, new: dict, report: dict) -> None:
    for env in sorted(set(old) | set(new)):
        before, after = old.get(env, {}), new.get(env, {})
        for path in sorted(set(before) | set(after)):
            name = f"{kind}/{env}/{path}"
            if path not in before:
                report["added"].append(name)
            elif path not in after:
                report["deleted"].append(name)
            elif tuple(before[path]) != tuple(after[path]):
                report["changed"].append(name)
            else:
                report["unchanged"] += 1


def _check_caught_up(kind: str, old: dict, new: dict, record: dict) -> None:
    """Refuse a sync from a master that has not applied the committed manifest ``old``: its
    tree still shows older content, and syncing it would revert every master. A path is
    behind when this master's tree does not show the committed content and either still
    holds what this master last wrote or adopted there (its record), or never had it. A file
    that differs from its record is an edit here, and a recorded file now absent a delete
    here: both are this sync's content."""
    behind = []
    for env, files in old.items():
        rec_env = record.get(env) if isinstance(record.get(env), dict) else {}
        for path, (sha, _, _) in files.items():
            cur = new.get(env, {}).get(path)
            cur_sha = cur[0] if cur is not None else None
            rec = rec_env.get(path)
            rec_sha = rec[0] if isinstance(rec, list) and rec else None
            if cur_sha == sha or rec_sha == sha:
                continue
            if (rec_sha is None and cur_sha is None) or (
                rec_sha is not None and cur_sha == rec_sha
            ):
                behind.append(f"{kind}/{env}/{path}")
    if behind:
        raise SyncRefused(
            f"this master has not applied the committed roots yet ({len(behind)} paths, first: "
            f"{behind[0]}): a sync from it would revert every master. Wait for its engine's "
            "pass (salt-run raft.status, roots.last_pass) or run the sync on the source master",
            [(name, "not applied here yet") for name in behind],
        )


def _check_manifest_fits(kind: str, envs: dict, source: str) -> None:
    """Refuse, before anything is sent, a manifest too large for one log entry: else every
    blob would be sent, the manifest refused by the log, and the blobs never removed (the
    next sync fails the same way before its removal step)."""
    # pylint: disable=import-outside-toplevel
    import salt.payload

    from saltext_raft.replicated.service import ENTRY_VALUES_MAX

    size = len(salt.payload.dumps(_manifest_value(envs, source, 0)))
    if size > ENTRY_VALUES_MAX:
        count = sum(len(files) for files in envs.values())
        raise SyncRefused(
            f"the {kind} manifest ({count} files) would be {size} bytes, over the "
            f"{ENTRY_VALUES_MAX} one log entry carries; nothing was sent (fewer files or "
            "shorter paths, or move an environment out of the replicated roots)"
        )


def _manifest_value(envs: dict, source: str, at: int) -> dict:
    return layout.manifest(
        {env: {p: list(item) for p, item in files.items()} for env, files in envs.items()},
        source,
        at,
    )


def _blob_complete(store, bank: str, size: int) -> bool:
    """The blob has its ``info`` and every chunk key. ``info`` alone is not enough: a second
    master syncing at the same time may remove a blob (its step (4)) while this one is between
    two of its chunks; this sync then writes the remaining chunks and ``info``, and a blob
    trusted on ``info`` alone would lack its first chunks and never be sent again."""
    keys = set(store.list_(bank))
    want = {layout.chunk_key(index) for index in range(layout.chunk_count(size))}
    return layout.INFO_KEY in keys and want <= keys


def sync(
    store,
    trees: dict,
    *,
    max_file_bytes: int,
    source: str = "",
    test: bool = False,
    clock=time.time,
    applied: dict | None = None,
) -> dict:
    """Sync ``trees`` (``{kind: {env: directory}}``) into the cluster through ``store``.

    Returns ``{"added", "changed", "deleted"`` (``kind/env/path`` lists), ``"unchanged"``,
    ``"sent_blobs"``, ``"sent_chunks"``, ``"sent_bytes"``, ``"removed_blobs"``, ``"test"}``.
    Raises :class:`SyncRefused` (nothing sent) when a tree has anything refused, a
    committed manifest is unreadable, or (with ``applied``, this master's record of what it
    wrote: :func:`.apply.load_record`) this master has not applied the committed manifests
    yet; cache errors propagate (the sync may be run again).
    """
    scanned = _scan_all(trees, max_file_bytes)
    report = {
        "added": [],
        "changed": [],
        "deleted": [],
        "unchanged": 0,
        "sent_blobs": 0,
        "sent_chunks": 0,
        "sent_bytes": 0,
        "removed_blobs": 0,
        "test": bool(test),
    }
    new_manifests: dict = {}
    changed_kinds = []
    for kind in trees:
        committed = store.fetch(layout.MANIFESTS_BANK, kind)
        try:
            old = layout.check_manifest(kind, committed, layout.MAX_FILE_BYTES_LIMIT)
        except layout.BadRootPath as exc:
            raise SyncRefused(f"the committed {kind} manifest is unreadable: {exc}") from None
        new = {
            env: {p: (f.sha, f.size, f.mode) for p, f in result.files.items()}
            for env, result in scanned.get(kind, {}).items()
        }
        new_manifests[kind] = new
        # A manifest this master committed was its own tree: it cannot be behind on it (and
        # a file added, synced, then deleted before its engine's next pass is a delete).
        if applied is not None and (committed or {}).get("source") != source:
            _check_caught_up(kind, old, new, applied.get(kind) or {})
        _diff(kind, old, new, report)
        if old != new:
            changed_kinds.append(kind)
    for kind in changed_kinds:
        _check_manifest_fits(kind, new_manifests[kind], source)
    if test:
        return report
    # (2) blobs, each one complete before any manifest names it; every blob is checked, not
    # only those of changed files, so a blob lost or torn since the last sync is sent again
    sources = {}
    for kind in scanned:
        for env, result in scanned[kind].items():
            for path, f in result.files.items():
                sources.setdefault(f.sha, (trees[kind][env], path, f))
    for sha, (root, path, f) in sorted(sources.items()):
        bank = layout.blob_bank(sha)
        if _blob_complete(store, bank, f.size):
            continue
        chunks = 0
        for index, block in enumerate(scan.read_chunks(root, path, f)):
            store.store(bank, layout.chunk_key(index), block)
            chunks += 1
            report["sent_chunks"] += 1
            report["sent_bytes"] += len(block)
        store.store(bank, layout.INFO_KEY, {"size": f.size, "chunks": chunks})
        report["sent_blobs"] += 1
    # (3) manifests (only the changed ones: an unchanged tree commits nothing)
    now = int(clock())
    for kind in changed_kinds:
        store.store(layout.MANIFESTS_BANK, kind, _manifest_value(new_manifests[kind], source, now))
    # (4) blobs nobody names any more (of every kind, including kinds this master does not sync)
    named = set()
    for kind in layout.KINDS:
        if kind in new_manifests:
            files = new_manifests[kind]
        else:
            try:
                files = layout.check_manifest(
                    kind, store.fetch(layout.MANIFESTS_BANK, kind), layout.MAX_FILE_BYTES_LIMIT
                )
            except layout.BadRootPath:
                return report  # cannot tell what is in use: remove nothing
        named.update(item[0] for env in files.values() for item in env.values())
    for sha in store.list_(layout.BLOBS_BANK):
        if sha not in named:
            store.flush(f"{layout.BLOBS_BANK}/{sha}")
            report["removed_blobs"] += 1
    if not (changed_kinds or report["removed_blobs"]):
        return report  # nothing changed: no line per periodic scan
    log.info(
        "saltext-raft roots: synced (%d added, %d changed, %d deleted; %d blobs, %d bytes sent)",
        len(report["added"]),
        len(report["changed"]),
        len(report["deleted"]),
        report["sent_blobs"],
        report["sent_bytes"],
    )
    return report


def sync_from_opts(opts: dict, *, test: bool = False, store=None) -> dict:
    """:func:`sync` of this master's configured roots (the runner's and the engine's entry)."""
    settings = rootsconfig.from_opts(opts)
    if not settings.enabled:
        raise SyncRefused(
            "raft_roots is not enabled on this master (set raft_roots: true on every master; "
            "docs/roots.md)"
        )
    trees = {kind: rootsconfig.targets(opts, kind) for kind in settings.kinds}
    return sync(
        store if store is not None else CacheStore(opts),
        trees,
        max_file_bytes=settings.max_file_bytes,
        source=str(opts.get("id") or ""),
        test=test,
        applied=load_record(settings.state_path),
    )
