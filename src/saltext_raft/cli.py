"""Dispatching a command line through a table of commands.

Lives here: :func:`dispatch`, used by the operator command (``saltext_raft.__main__``) and by
``python -m saltext_raft bench`` (``saltext_raft.bench.__main__``): the usage text, ``--help``,
the error for an unknown command, and importing the chosen module. Must not live here: the
tables themselves (each lives with its command) or any command's options.

A table maps a command name to (dotted module name, one line saying what it does); the module
has ``main(argv) -> int``. Modules are imported only when chosen, so ``--help`` stays fast and
a command that needs Salt does not make the others need it.
"""

from __future__ import annotations

import importlib
import sys

#: Exit status for a command line that names no command or an unknown one (argparse's too).
USAGE_ERROR = 2


def usage(prog: str, table: dict[str, tuple[str, str]]) -> str:
    width = max(len(name) for name in table) + 2
    lines = [f"usage: {prog} <command> [--help | options]", "", "commands:"]
    lines += [f"  {name:{width}}{what}" for name, (_, what) in table.items()]
    lines += ["", f"'{prog} <command> --help' shows a command's options."]
    return "\n".join(lines)


def dispatch(prog: str, table: dict[str, tuple[str, str]], argv: list[str]) -> int:
    """Run the command ``argv[0]`` of ``table`` with the rest of ``argv``; its exit status."""
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage(prog, table))
        return 0
    if not argv:
        print(usage(prog, table), file=sys.stderr)
        return USAGE_ERROR
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(
            f"{prog}: unknown command {name!r} (known: {', '.join(table)})\n\n"
            + usage(prog, table),
            file=sys.stderr,
        )
        return USAGE_ERROR
    return importlib.import_module(table[name][0]).main(rest)
