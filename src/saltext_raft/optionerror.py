"""The error of an invalid Salt option of this extension, and the one shape of its message.

Lives here: :class:`OptionError` (``option`` names the option, ``why`` says what is wrong, the
message is "<subject> option '<name>': <why>"). Each settings module subclasses it with its
subject (the engine's options, the cache driver's, the replicated roots'). Must not live here:
what makes an option valid (each settings module), the runtime's and transport's own errors
(they carry one finished message, not an option and a reason).
"""

from __future__ import annotations


class OptionError(ValueError):
    """An option is invalid. ``option`` names it; ``why`` says what is wrong."""

    #: What the options configure, first in the message ("raft engine", "raft cache", ...).
    subject = "raft"

    def __init__(self, option: str, why: str):
        super().__init__(f"{self.subject} option {option!r}: {why}")
        self.option = option
        self.why = why
