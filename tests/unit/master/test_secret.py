"""The cluster secret file (issue 18, L1): others may not read it, and it must carry at least
32 bytes of random material, not a passphrase."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from saltext_raft.master import secret as secretmod
from saltext_raft.master.config import EngineConfigError
from saltext_raft.master.config import from_opts
from saltext_raft.master.secret import SecretError
from saltext_raft.master.secret import read_secret_file
from saltext_raft.master.secret import secret_strength

GOOD = b"00112233445566778899aabbccddeeff" * 2  # 64 hex digits


def write(path, data: bytes, mode: int = 0o600) -> str:
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


def opts(tmp_path):
    return {"id": "m1", "interface": "127.0.0.1", "cachedir": str(tmp_path / "cache")}


@pytest.mark.parametrize("mode", [0o666, 0o644, 0o640, 0o604, 0o620])
def test_a_secret_others_can_read_or_write_is_refused(tmp_path, mode):
    """Regression (L1): a 0666 secret file was used silently."""
    path = write(tmp_path / "raft.secret", GOOD, mode)
    with pytest.raises(EngineConfigError) as info:
        from_opts(opts(tmp_path), {"secret_file": path})
    assert info.value.option == "secret_file"
    assert f"mode {mode:04o}" in str(info.value) and f"chmod 0600 {path}" in str(info.value)


def test_a_secret_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    path = write(tmp_path / "raft.secret", GOOD)
    os.chown(path, 65534, 65534)
    with pytest.raises(SecretError, match="owned by uid 65534"):
        read_secret_file(path)


@pytest.mark.parametrize(
    "data",
    [
        b"password12345678",  # the review's example: 16 printable bytes
        b"correct horse battery staple, and more words after it",  # a long passphrase
        b"0123456789abcdef0123456789abcdef",  # 32 hex digits: 16 bytes
        b"c2hvcnQgYmFzZTY0IHNlY3JldA==",  # base64 of 20 bytes
        os.urandom(31),
    ],
)
def test_weak_secrets_are_refused(tmp_path, data):
    """Regression (L1): any 16 bytes passed, ``password12345678`` included."""
    path = write(tmp_path / "raft.secret", data)
    with pytest.raises(EngineConfigError, match="at least 32 random bytes"):
        from_opts(opts(tmp_path), {"secret_file": path})


@pytest.mark.parametrize(
    "data",
    [GOOD + b"\n", b"  " + GOOD.upper(), b"q83vEjRWeJq8EjRWeJq83vEjRWeJq83vEjRWeJq83vE=\n"],
)
def test_hex_and_base64_secrets_of_32_bytes_are_accepted(tmp_path, data):
    path = write(tmp_path / "raft.secret", data)
    assert read_secret_file(path) == data.strip()


def test_raw_random_bytes_are_counted_as_bytes():
    raw = bytes(range(1, 33))
    assert secret_strength(raw) == (32, "raw bytes")
    assert secret_strength(b"password12345678")[0] < 32  # reads as base64 of 12 bytes


def test_the_generated_secret_is_0600_strong_and_accepted(tmp_path):
    path = str(tmp_path / "raft.secret")
    old = os.umask(0)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "saltext_raft", "secret", "generate", path],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
            check=False,
        )
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = read_secret_file(path)
    assert secret_strength(data) == (32, "hex text")
    cfg = from_opts(opts(tmp_path), {"secret_file": path})
    assert cfg.secret == data
    assert [p for p in os.listdir(tmp_path) if p != "raft.secret" and p != "cache"] == []


def test_generate_does_not_replace_an_existing_secret(tmp_path):
    path = write(tmp_path / "raft.secret", GOOD)
    assert secretmod.main(["generate", path]) == 2
    assert open(path, "rb").read() == GOOD
    assert secretmod.main(["generate", path, "--overwrite"]) == 0
    assert open(path, "rb").read().strip() != GOOD
    assert secretmod.main(["check", path]) == 0


def test_a_symbolic_link_is_judged_by_the_file_it_names(tmp_path):
    """The link itself is always 0777: what counts is who may read the secret, the target."""
    target = write(tmp_path / "world-readable", GOOD, 0o644)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(SecretError, match="has mode 0644"):
        read_secret_file(str(tmp_path / "link"))
    os.chmod(target, 0o600)
    assert read_secret_file(str(tmp_path / "link")) == GOOD
    if os.geteuid() == 0:
        os.chown(target, 65534, 65534)
        with pytest.raises(SecretError, match="owned by uid 65534"):
            read_secret_file(str(tmp_path / "link"))


def test_a_fifo_at_the_secret_path_is_refused_at_once_not_waited_on(tmp_path):
    """Whoever can write the secret's directory (``/tmp/secret``) could plant a FIFO there:
    opening it for reading waited for a writer, so the engine or node hung at start. Run in a
    child, so that the old code's hang ends at the timeout (the child is killed)."""
    path = tmp_path / "secret"
    os.mkfifo(path, 0o600)
    proc = subprocess.run(
        [sys.executable, "-m", "saltext_raft", "secret", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        check=False,
    )
    assert proc.returncode == 2 and "is not a regular file" in proc.stderr
