"""The operator command: ``python -m saltext_raft <command> [options]``.

Lives here: :data:`COMMANDS`, the one table from a command name to the dotted name of the
module that implements it (each has ``main(argv) -> int``); moving a module is a one-line
change to the table. Must not live here: any command's own options or work, the dispatch
itself (``saltext_raft.cli``).

The modules stay runnable on their own (``python -m saltext_raft.sim`` ...) for scripts that
already call them; the docs use this command.
"""

from __future__ import annotations

import sys

from saltext_raft.cli import dispatch

#: Command name -> (dotted module name, one line of what it does). Keep in this order in
#: ``--help``: what an operator needs first.
COMMANDS = {
    "recover": (
        "saltext_raft.master.recover",
        "lost quorum for good: make this master the only voter, or --restore a backup",
    ),
    "import": (
        "saltext_raft.replicated.importer",
        "copy an existing Salt cache into the replicated one (cache: raft)",
    ),
    "keys": (
        "saltext_raft.replicated.keystore",
        "keys import: copy accepted minion keys into the replicated key store",
    ),
    "secret": (
        "saltext_raft.master.secret",
        "generate or check the cluster secret file (owner, mode, strength)",
    ),
    "node": (
        "saltext_raft.standalone",
        "a standalone Raft node with a key/value state machine, no Salt daemons",
    ),
    "sim": (
        "saltext_raft.sim.__main__",
        "the deterministic simulator: seeded faults, invariants checked every step",
    ),
    "demo": (
        "saltext_raft.demo",
        "3 Salt masters and a minion: failover, test.ping, a fourth master joins by itself",
    ),
    "bench": (
        "saltext_raft.bench.__main__",
        "the benchmarks (python -m saltext_raft bench --help lists them)",
    ),
}

PROG = "python -m saltext_raft"


def main(argv: list[str] | None = None) -> int:
    return dispatch(PROG, COMMANDS, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
