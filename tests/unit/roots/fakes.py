"""An in-memory stand-in for the replicated cache as the roots store uses it (``fetch``,
``contains``, ``list_``, ``store``, ``flush``), counting writes and able to fail after a number
of them (a source master that dies in the middle of a sync)."""

from __future__ import annotations


class Crash(RuntimeError):
    """The planted failure: the source died here."""


class MemoryCache:
    def __init__(self):
        self.banks: dict[str, dict] = {}
        self.writes = 0
        self.fail_after: int | None = None

    def fetch(self, bank, key):
        return self.banks.get(bank, {}).get(key, {})

    def contains(self, bank, key):
        return key in self.banks.get(bank, {})

    def list_(self, bank):
        prefix = bank + "/"
        subs = {b[len(prefix) :].split("/")[0] for b in self.banks if b.startswith(prefix)}
        return sorted(set(self.banks.get(bank, {})) | subs)

    def store(self, bank, key, value):
        if self.fail_after is not None and self.writes >= self.fail_after:
            raise Crash(f"the source died before writing {bank}/{key}")
        self.writes += 1
        self.banks.setdefault(bank, {})[key] = value

    def flush(self, bank, key=None):
        self.writes += 1
        if key is not None:
            self.banks.get(bank, {}).pop(key, None)
            return
        for name in [b for b in self.banks if b == bank or b.startswith(bank + "/")]:
            del self.banks[name]
