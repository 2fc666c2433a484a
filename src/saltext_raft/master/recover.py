"""Recovering a cluster that lost quorum for good: ``python -m saltext_raft recover``.

When a majority of the voters is gone and will not come back (disks lost, hosts destroyed), no
leader can be elected, every gate stays closed and ``cache: raft`` writes fail, although the
surviving masters still hold the log. This command, run on one surviving master **with
salt-master stopped**, makes that master the only voter of its cluster, keeping everything its
log holds (see :mod:`saltext_raft.core.recovery` for what is kept and why). Started again, the
master elects itself, applies its whole log and opens its gate; the other masters are then
rebuilt empty and join it as new masters do. docs/operations.md has the step-by-step runbook.

Without ``--force-new-cluster`` it only reports what it would do (nothing is written).

With ``--restore FILE`` it starts instead from a backup written by ``salt-run raft.backup``
of the same cluster (``cluster_id``), into a master whose Raft storage is empty: after losing
every master, or to roll the cluster's state back to the backup (a new cluster, rebuilt around
that master as above).

Lives here: the Salt side (master config, engine options, the engine lock, the storage through
Salt's cache), the report, and the backup files on a master (:func:`write_backup`, used by the
engine for ``raft.backup``, and :func:`read_backup`). Must not live here: the decision itself
(``core/recovery.py``), the backup format (``runtime/backup.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys

from saltext_raft.master.fileutil import LockHeld
from saltext_raft.master.fileutil import ProcessLock
from saltext_raft.master.fileutil import UnsafeDirectory
from saltext_raft.master.fileutil import atomic_write
from saltext_raft.master.fileutil import ensure_private_dir

log = logging.getLogger(__name__)

#: What the operator does next, after the recovery entry is written.
NEXT_STEPS = (
    "Make sure the lost masters never start again with their old Raft data: with another "
    "lost master they could still elect a leader of the old membership. Safest: give this "
    "master a new secret_file now, and each rebuilt master the same one.",
    "Start salt-master here. It elects itself, applies its log and opens its gate; "
    "'salt-run raft.members' shows it as the only voter.",
    "Rebuild each other master with empty Raft data (remove <cachedir>/saltext_raft/ and the "
    "cache bank saltext_raft/ of its cache driver) and 'join: true' in its engine options, then "
    "start it: it joins as a learner, copies the log and is promoted.",
)


#: How a backup's temp file ends: ``.<file name>.<writer's pid>.<random>`` + this, in the backup
#: directory, until it is renamed to the file name. The pid tells a crashed backup's leftover
#: (:func:`remove_stale_temps`) from one being written.
TEMP_SUFFIX = ".raft-backup-tmp"


def _temp_writer(name: str) -> int | None:
    """The pid in a backup temp file's ``name`` (see :data:`TEMP_SUFFIX`), None for any other
    name."""
    if not name.startswith(".") or not name.endswith(TEMP_SUFFIX):
        return None
    parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3 or len(parts[0]) < 2 or not parts[1].isdigit() or not parts[2]:
        return None
    return int(parts[1])


def remove_stale_temps(backup_dir: str) -> list[str]:
    """Remove the temp files that backups whose process is gone (a master that crashed or was
    killed mid-backup) left in ``backup_dir``; returns their paths. Only regular files of this
    user named as :data:`TEMP_SUFFIX` says, whose pid no process of this user holds now: never
    a file of another name, a link, or the temp of a backup being written."""
    # pylint: disable=import-outside-toplevel
    from saltext_raft.master.readiness import process_alive

    removed = []
    for name in os.listdir(backup_dir):
        pid = _temp_writer(name)
        if pid is None or process_alive(pid):
            continue
        path = os.path.join(backup_dir, name)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(path)
                removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def backup_path(backup_dir: str, path: str) -> str:
    """Where ``raft.backup path=<path>`` writes: ``path`` is a file name in ``backup_dir``, or
    an absolute path of a file directly in it. Anything else (another directory, "..", a
    symbolic link at that name) is refused: the runner may be granted through
    ``external_auth`` to users who must not write files as the master's user elsewhere."""
    from saltext_raft.runtime.backup import BackupError  # pylint: disable=import-outside-toplevel

    backup_dir = os.path.abspath(backup_dir)
    where = f"the backup directory {backup_dir} (engine option backup_dir)"
    if not isinstance(path, str) or not path or "\0" in path:
        raise BackupError("backup: pass path=<file name in the backup directory>")
    parts = path.split("/")
    if ".." in parts or "." in parts:
        raise BackupError(
            f"backup path {path!r}: '.' and '..' are not allowed; name a file in {where}"
        )
    candidate = path if os.path.isabs(path) else os.path.join(backup_dir, path)
    candidate = os.path.normpath(candidate)
    if os.path.dirname(candidate) != backup_dir or not os.path.basename(candidate):
        raise BackupError(
            f"backup path {path!r} is outside {where}: backups are written there only; give a "
            "file name, or change backup_dir"
        )
    if os.path.islink(candidate):
        raise BackupError(f"{candidate} is a symbolic link: refusing to write a backup through it")
    return candidate


def write_backup(
    path: str, backup, *, secret: bytes, backup_dir: str, overwrite: bool = False
) -> tuple[str, int]:
    """Write ``backup`` (a :class:`~saltext_raft.runtime.backup.Backup`), authenticated with a
    key derived from ``secret``, to ``path`` in ``backup_dir`` (:func:`backup_path`), whole or
    not at all, durably, mode 0600 (its temp file too); returns the path written and its size.
    ``backup_dir`` is created 0700 and must be private to the master's user. Refuses an
    existing file unless ``overwrite``. Removes first what crashed backups left behind
    (:func:`remove_stale_temps`). Raises ``BackupError``."""
    # pylint: disable=import-outside-toplevel
    from saltext_raft.runtime.backup import BackupError
    from saltext_raft.runtime.backup import encode

    try:
        ensure_private_dir(backup_dir, "the backup directory (engine option backup_dir)")
    except UnsafeDirectory as exc:
        raise BackupError(str(exc)) from None
    path = backup_path(backup_dir, path)
    if os.path.exists(path) and not overwrite:
        raise BackupError(f"{path} exists; pass overwrite=True to replace it")
    for stale in remove_stale_temps(backup_dir):
        log.warning("saltext-raft backup: removed %s, left by a backup that did not finish", stale)
    blob = encode(backup, secret)
    try:
        atomic_write(
            path,
            blob,
            prefix=f".{os.path.basename(path)}.{os.getpid()}.",
            suffix=TEMP_SUFFIX,
            mode=0o600,
            durable=True,
        )
    except OSError as exc:
        raise BackupError(
            f"cannot write the backup to {path}: {exc.strerror or exc} (nothing was written "
            "there; a file already at that path is unchanged)"
        ) from None
    return path, len(blob)


def read_backup(path: str, secret: bytes):
    """The :class:`~saltext_raft.runtime.backup.Backup` in ``path``, authenticated with
    ``secret``; raises ``BackupError``. Only a regular file is read: the operator names it, often
    in a directory anyone can write (``/tmp``), so a FIFO planted there (which a plain ``open``
    waits on for ever) or a device (``/dev/zero``, read until memory runs out) is refused at
    once. A file whose first bytes are no backup's is refused without reading the rest."""
    # pylint: disable=import-outside-toplevel
    from saltext_raft.runtime.backup import MAGIC
    from saltext_raft.runtime.backup import MAGIC_PREFIX
    from saltext_raft.runtime.backup import BackupError
    from saltext_raft.runtime.backup import decode

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BackupError(f"{path} is not a regular file: refused as a backup to restore")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            head = fh.read(len(MAGIC))
            if len(head) == len(MAGIC) and not head.startswith(MAGIC_PREFIX):
                return decode(head, secret, path)  # refused: not a backup at all
            blob = head + fh.read()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return decode(blob, secret, path)


class RecoverError(Exception):
    """The recovery cannot run; the message says why and what to do."""


def recover(
    opts: dict, address: str = "", *, write: bool, restore: str = "", backup_secret: str = ""
) -> dict:
    """Run the recovery (or, without ``write``, a dry run) on the master whose opts these are:
    from its own log, or with ``restore`` from that backup file into its empty storage. The
    backup is authenticated with this master's cluster secret, or with the secret file
    ``backup_secret`` (the one in force when it was taken). Returns the report; raises
    :class:`RecoverError`."""
    # pylint: disable=import-outside-toplevel
    from saltext_raft.core.types import RaftError
    from saltext_raft.master.config import EngineConfigError
    from saltext_raft.master.config import from_opts
    from saltext_raft.master.secret import SecretError
    from saltext_raft.master.secret import read_secret_file
    from saltext_raft.master.settings import engine_options
    from saltext_raft.replicated.config import storage_opts
    from saltext_raft.runtime.backup import BackupError
    from saltext_raft.runtime.recovery import RecoveryRefused
    from saltext_raft.runtime.recovery import recover_store
    from saltext_raft.runtime.recovery import restore_store
    from saltext_raft.storage.base import StorageError
    from saltext_raft.storage.store import open_store

    options = engine_options(opts)
    if options is None:
        raise RecoverError(
            f"the raft engine is not configured in {opts.get('conf_file') or 'this master'}'s "
            "'engines' option: there is no Raft storage to recover"
        )
    try:
        cfg = from_opts(opts, options, load_secret=bool(restore and not backup_secret))
        if restore and backup_secret:
            cfg.secret = read_secret_file(backup_secret)
    except EngineConfigError as exc:
        raise RecoverError(f"raft engine option {exc}") from None
    except SecretError as exc:
        raise RecoverError(f"--backup-secret: {exc}") from None
    backup = None
    if restore:
        try:
            backup = read_backup(restore, cfg.secret)
        except BackupError as exc:
            raise RecoverError(str(exc)) from None
        if backup.cluster_id != cfg.cluster_id:
            # The backup key comes from the secret alone: two clusters sharing a secret file, or
            # --backup-secret naming another cluster's, authenticate each other's backups.
            raise RecoverError(
                f"{restore} is a backup of cluster {backup.cluster_id!r}; this master is of "
                f"cluster {cfg.cluster_id!r} (engine option cluster_id, else Salt's cluster_id): "
                "refused, nothing written. To start this cluster from it on purpose, give this "
                f"master cluster_id {backup.cluster_id!r} first"
            )
    try:
        with (
            ProcessLock(cfg.lock_path),
            open_store(storage_opts(opts), cfg.cluster_id, cfg.node_id) as store,
        ):
            if backup is not None:
                recovery = restore_store(
                    store, cfg.node_id, backup.snapshot, address, cfg.advertise, write=write
                )
            else:
                recovery = recover_store(store, cfg.node_id, address, cfg.advertise, write=write)
    except UnsafeDirectory as exc:
        raise RecoverError(f"not touching the Raft storage: {exc}") from None
    except LockHeld as exc:
        raise RecoverError(
            f"the raft engine is running on this master (process {exc.pid or 'unknown'} holds "
            f"{exc.path}): stop salt-master first. A running engine would overwrite the recovery."
        ) from None
    except (RaftError, StorageError, RecoveryRefused) as exc:
        raise RecoverError(str(exc)) from None
    report = {
        "node_id": cfg.node_id,
        "cluster_id": cfg.cluster_id,
        "written": write,
        **recovery.summary(),
    }
    if backup is not None:
        report["restored_from"] = dict(backup.summary(), path=restore)
    report["warnings"] = _warnings(cfg.node_id, recovery.previous, backup is not None)
    if write:
        report["next_steps"] = list(NEXT_STEPS)
    return report


def _warnings(node_id: str, previous, restoring: bool) -> list[str]:
    """What the operator should weigh before writing: a survivor that was not a voter may
    hold an older log than the lost voters had."""
    if restoring:
        return []
    if node_id in previous.learners:
        return [
            f"{node_id} is a learner in its own log: learners may lag behind the voters, so its "
            "log may miss writes the lost voters committed. Prefer a surviving voter if any."
        ]
    if node_id not in previous.voters:
        return [
            f"{node_id} is not a member in its own log (it was removed, or never added): its log "
            "stopped when it left and may be far behind. Prefer a surviving member if any."
        ]
    return []


def render(report: dict) -> str:
    before = report["previous_membership"]
    lines = [f"master {report['node_id']} of raft cluster {report['cluster_id']}"]
    source = report.get("restored_from")
    if source:
        lines += [
            f"  restoring {source['path']}: the state of cluster {source['cluster_id']} at "
            f"index {source['snapshot_index']}, taken on {source['taken_on']} at "
            f"{source['created']} ({source['state_bytes']} bytes)",
            f"  voters in the backup:   {', '.join(before['voters']) or '(none)'}",
        ]
    else:
        lines += [
            f"  voters now:   {', '.join(before['voters']) or '(none)'}",
            f"  learners now: {', '.join(before['learners']) or '(none)'}",
            f"  log: last index {report['last_index']}, commit index "
            f"{report['previous_commit_index']}, "
            f"{report['entries_committed_by_recovery']} entries after it that count as "
            "committed after the recovery",
        ]
    lines += [
        f"  after: {report['node_id']} the only voter "
        f"(at {report['membership']['addresses'].get(report['node_id'], '?')}), "
        f"term {report['term']}, commit index {report['commit_index']}",
    ]
    lines.extend(f"  warning: {text}" for text in report["warnings"])
    if report["written"]:
        lines.append("Written. Next:")
        lines.extend(f"  {n}. {step}" for n, step in enumerate(report["next_steps"], 1))
    else:
        what = (
            "restore the backup here"
            if source
            else "make this master the only voter (only when a majority of the voters is lost "
            "for good)"
        )
        lines.append(f"Dry run: nothing was written. Run again with --force-new-cluster to {what}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m saltext_raft recover",
        description="After a permanent loss of quorum: make this master the only voter of its "
        "raft cluster, keeping its whole log. Run with salt-master stopped. Without "
        "--force-new-cluster, only report what would change.",
    )
    parser.add_argument("-c", "--config-dir", default="/etc/salt")
    parser.add_argument(
        "--force-new-cluster",
        action="store_true",
        help="write the recovery (default: a dry run that writes nothing)",
    )
    parser.add_argument(
        "--address",
        default="",
        help="host:port the other masters will reach this one at (default: the address its "
        "membership records)",
    )
    parser.add_argument(
        "--restore",
        metavar="FILE",
        default="",
        help="restore this backup (salt-run raft.backup) into this master's empty Raft storage "
        "instead of recovering from its own log",
    )
    parser.add_argument(
        "--backup-secret",
        metavar="FILE",
        default="",
        help="with --restore: the secret file in force when the backup was taken, if it is not "
        "this master's secret_file any more (backups are authenticated with the cluster secret)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    import salt.config  # pylint: disable=import-outside-toplevel

    path = os.path.join(args.config_dir, "master")
    if not os.path.isfile(path):
        print(f"recover: no master config at {path} (use -c)", file=sys.stderr)
        return 2
    opts = salt.config.master_config(path)
    try:
        report = recover(
            opts,
            args.address,
            write=args.force_new_cluster,
            restore=args.restore,
            backup_secret=args.backup_secret,
        )
    except RecoverError as exc:
        print(f"recover: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
