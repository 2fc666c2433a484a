"""The local unprivileged user of the security tests (issue 18): a forked child that switched
to uid/gid 65534 ("nobody"), and the directories such a user can write to.

Lives here: :func:`as_nobody`, :func:`sticky_shared_dir` (a world-writable sticky directory
like ``/dev/shm``) and :func:`plant_rogue_key` (a local copy of the cache listing minion
``rogue`` as accepted). Must not live here: assertions about what the code under test does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import salt.payload

NOBODY = 65534
ROGUE_PUB = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQ\n-----END PUBLIC KEY-----\n"
#: The key store's bank in the local copy (replicated/keystore.py).
KEYS_BANK = os.path.join("saltext_raft_keys", "keys")


def as_nobody(fn) -> None:
    """Run ``fn`` in a forked child as uid/gid 65534; raise if it fails there. Needs root."""
    pid = os.fork()
    if pid == 0:  # the attacker
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
            code = 0
        except BaseException as exc:  # pylint: disable=broad-except
            os.write(2, f"attacker failed: {exc!r}\n".encode())
        finally:
            os._exit(code)  # pylint: disable=protected-access
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise AssertionError("the attacker's setup failed (see stderr)")


@contextlib.contextmanager
def sticky_shared_dir():
    """A world-writable sticky directory (as /dev/shm and /tmp are), outside pytest's private
    tmp (which uid 65534 cannot enter); removed afterwards."""
    path = tempfile.mkdtemp(prefix="raft-shm-", dir="/tmp")
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def plant_rogue_key(root: str) -> None:
    """As the attacker: create ``root`` in the ``localfs`` layout of the local copy, with minion
    ``rogue`` accepted, everything mode 0777."""
    os.umask(0)
    bank = os.path.join(root, KEYS_BANK)
    os.makedirs(bank, mode=0o777)
    data = salt.payload.dumps({"state": "accepted", "pub": ROGUE_PUB})
    with open(os.path.join(bank, "rogue.p"), "wb") as fh:
        fh.write(data)
    os.makedirs(root + ".tmp", mode=0o777)
