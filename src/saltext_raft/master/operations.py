"""The runners' operations, as the engine carries them out.

Lives here: :class:`EngineOperations` — one ``_op_<name>`` method per operation of
``control.OPS`` (the vocabulary, written once in ``master/control.py``), run on the engine's
loop. Must not live here: the bus protocol and request authentication (``master/control.py``),
how results are rendered (the runners), Raft rules (the runtime does the membership changes).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time

from saltext_raft.master import control

log = logging.getLogger(__name__)


class EngineOperations:
    """The operations of one engine. Its port is the service's public face: ``cfg``,
    ``opts``, ``runtime``, ``status()`` and ``members()``."""

    def __init__(self, service):
        self._service = service

    async def run(self, op: str, args: dict, timeout: float):
        """Run one operation of the runners' vocabulary (``control.OPS``): each is the method
        ``_op_<name>``, so the vocabulary is written once, in ``master/control.py``."""
        if op not in control.OPS:
            raise ValueError(f"unknown operation {op!r}")
        if op in control.NODE_OPS and not str(args.get("node") or ""):
            raise ValueError(f"{op}: which master? (pass node=<master id>)")
        return await getattr(self, f"_op_{op}")(self._service.runtime, args, timeout)

    # pylint: disable=unused-argument
    async def _op_ping(self, rt, args: dict, timeout: float):
        return {"node_id": self._service.cfg.node_id, "pid": os.getpid()}

    async def _op_status(self, rt, args: dict, timeout: float):
        return self._service.status()

    async def _op_members(self, rt, args: dict, timeout: float):
        return self._service.members()

    async def _op_leader(self, rt, args: dict, timeout: float):
        node = rt.view()
        cfg = self._service.cfg
        return {"leader": node.leader or None, "term": node.term, "node_id": cfg.node_id}

    async def _op_add_learner(self, rt, args: dict, timeout: float):
        address = str(args.get("address") or "")
        if not address:
            raise ValueError("add_learner: pass address=<host:port> of the new master's raft port")
        from saltext_raft.master.config import split_host_port  # pylint: disable=import-outside-toplevel

        split_host_port(address, None, "address")
        return await rt.add_learner(str(args["node"]), address, timeout)

    async def _op_promote(self, rt, args: dict, timeout: float):
        return await rt.promote(str(args["node"]), timeout)

    async def _op_demote(self, rt, args: dict, timeout: float):
        return await rt.demote(str(args["node"]), timeout)

    async def _op_remove(self, rt, args: dict, timeout: float):
        return await rt.remove(str(args["node"]), timeout)

    async def _op_transfer_leader(self, rt, args: dict, timeout: float):
        return await rt.transfer_leader(str(args["node"]), timeout)

    async def _op_snapshot(self, rt, args: dict, timeout: float):
        return await rt.take_snapshot()

    async def _op_reload_secrets(self, rt, args: dict, timeout: float):
        return self._reload_secrets(rt)

    async def _op_backup(self, rt, args: dict, timeout: float):
        return await self._backup(rt, args)

    # pylint: enable=unused-argument
    def _reload_secrets(self, rt) -> dict:
        """Re-read ``secret_file`` and ``accept_secret_files`` (same paths as at start) and
        switch the transport to them: one step of a rotation (docs/operations.md)."""
        # pylint: disable=import-outside-toplevel
        from saltext_raft.master.config import read_accept_secrets
        from saltext_raft.master.config import read_secret

        cfg = self._service.cfg
        if not cfg.secret_file:
            raise ValueError(
                "reload_secrets: the secret is derived from the cluster key, not read from "
                "secret_file; set secret_file to rotate it (docs/operations.md)"
            )
        secret, source = read_secret(cfg.secret_file, self._service.opts)
        accept = read_accept_secrets(cfg.accept_secret_files, self._service.opts)
        rt.transport.set_secrets(secret, accept)
        cfg.secret, cfg.accept_secrets = secret, accept
        log.info(
            "saltext-raft %s: secrets reloaded: sending with %s, %d more accepted",
            cfg.node_id,
            source,
            len(accept),
        )
        return {"secret_file": source, "accepted_more": len(accept)}

    async def _backup(self, rt, args: dict) -> dict:
        # pylint: disable=import-outside-toplevel
        from saltext_raft.master.recover import backup_path
        from saltext_raft.master.recover import write_backup
        from saltext_raft.runtime.backup import Backup

        cfg = self._service.cfg
        created = time.time()
        default_name = time.strftime(
            f"{cfg.cluster_id}-{cfg.node_id}-%Y%m%dT%H%M%SZ.bak", time.gmtime(created)
        )
        path = str(args.get("path") or default_name)
        overwrite = args.get("overwrite") is True  # the runner sends a bool
        backup_path(cfg.backups, path)  # refuse a bad path before taking the snapshot
        backup = Backup(cfg.cluster_id, cfg.node_id, created, await rt.backup_snapshot())
        path, size = await asyncio.get_running_loop().run_in_executor(
            None,
            functools.partial(
                write_backup,
                path,
                backup,
                secret=cfg.secret,
                backup_dir=cfg.backups,
                overwrite=overwrite,
            ),
        )
        log.info("saltext-raft %s: wrote a backup of %d bytes to %s", cfg.node_id, size, path)
        return {"path": path, "bytes": size, **backup.summary()}
