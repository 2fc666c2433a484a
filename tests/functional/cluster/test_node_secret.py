"""The standalone node reads ``--secret-file`` with the engine's checks (owner, mode,
strength: ``integration.secret``) and holds ``--data-dir`` to the engine's private-directory
rule: a file group or others may read, one too weak to be a key, or a data directory another
user made stops it at start with exit status 2 and the reason; it never joins the cluster."""

from __future__ import annotations

import os
import socket

import pytest

from saltext_raft.master.secret import generate
from tests.childpython import run_python

pytest.importorskip("zmq")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(tmp_path, secret_path):
    return start_node_in(str(tmp_path / "n1"), secret_path)


def start_node_in(data_dir, secret_path):
    """The node with a memory store on a free loopback port; bounded: a node that starts
    anyway would run until the timeout, and the test fails on TimeoutExpired."""
    listen = f"127.0.0.1:{free_port()}"
    return run_python(
        [
            "-m", "saltext_raft", "node", "--id", "n1", "--listen", listen,
            "--data-dir", str(data_dir), "--secret-file", str(secret_path),
            "--store", "memory",
        ],
        timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("contents", "mode", "reason"),
    [
        (os.urandom(32).hex(), 0o644, "has mode 0644"),  # strong, but others may read it
        ("correct horse battery staple", 0o600, "bytes of key material"),  # a passphrase
        (os.urandom(24).hex(), 0o600, "holds 24 bytes of key material"),  # too short
    ],
    ids=["world-readable", "passphrase", "short"],
)
def test_an_unusable_secret_file_stops_the_node_with_the_reason(tmp_path, contents, mode, reason):
    path = tmp_path / "secret"
    path.write_text(contents)
    os.chmod(path, mode)
    proc = start_node(tmp_path, path)
    assert proc.returncode == 2, proc.stderr
    assert "--secret-file" in proc.stderr and reason in proc.stderr
    assert '"event": "ready"' not in proc.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_data_dir_another_user_planted_stops_the_node_with_the_reason():
    """uid 65534 creates the node's ``--data-dir`` in a sticky shared directory (``/tmp``)
    first, with a FIFO where the boot epoch goes: the node used to hang at start for ever (and,
    without the FIFO, run on storage that user can rewrite). Now it stops with status 2."""
    from tests.attacker import NOBODY  # pylint: disable=import-outside-toplevel
    from tests.attacker import as_nobody  # pylint: disable=import-outside-toplevel
    from tests.attacker import sticky_shared_dir  # pylint: disable=import-outside-toplevel

    with sticky_shared_dir() as shared:
        data_dir = os.path.join(shared, "n1")

        def plant():
            os.mkdir(data_dir, 0o777)
            os.chmod(data_dir, 0o777)
            os.mkfifo(os.path.join(data_dir, "transport.epoch"), 0o666)

        as_nobody(plant)
        secret = os.path.join(shared, "secret")
        generate(secret)
        proc = start_node_in(data_dir, secret)
        assert proc.returncode == 2, proc.stderr
        assert "--data-dir" in proc.stderr and f"owned by uid {NOBODY}" in proc.stderr
        assert '"event": "ready"' not in proc.stdout
