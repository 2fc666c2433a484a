"""The cluster secret file: what a good one is, reading it safely, and generating one.

Lives here: :func:`read_secret_file` (owner, mode and strength checks; the one reader of a
``secret_file``), :func:`secret_strength` (how many bytes of key material a file's contents
carry), :func:`generate` and the command ``python -m saltext_raft secret generate
PATH``. Must not live here: where the secret comes from when no file is set (derived from
Salt's cluster key: ``integration.config``), how keys are derived from it
(``transport.crypto``). No Salt import.

Why these rules: the secret is the only thing that makes a frame a master's frame, so a file
another local user can read hands them the cluster, and a file they can write lets them pick
it. HKDF is no password hash: it stretches nothing, so the file must hold at least
:data:`MIN_SECRET_BYTES` bytes of random material, not a passphrase. Accepted forms: hex text
(``openssl rand -hex 32``: 64 hex digits), base64 text (``openssl rand -base64 32``) or raw
bytes (``head -c 32 /dev/urandom``). The bytes the transport keys are derived from are the
file's contents with surrounding whitespace removed, as before: the form only decides how much
material is counted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import secrets
import stat
import sys

from saltext_raft.master.fileutil import atomic_write

#: Bytes of key material a secret file must carry (256 bits).
MIN_SECRET_BYTES = 32
HOW_TO_GENERATE = "python -m saltext_raft secret generate {path}"

_HEX = re.compile(rb"[0-9a-fA-F]+")
_B64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


class SecretError(ValueError):
    """The secret file cannot be used; the message says why and what to do."""


def secret_strength(data: bytes) -> tuple[int, str]:
    """(bytes of key material, the form recognised) of a secret file's stripped contents."""
    if _HEX.fullmatch(data) and len(data) % 2 == 0:
        return len(data) // 2, "hex text"
    if _B64.fullmatch(data) and len(data) % 4 == 0:
        try:
            return len(base64.b64decode(data, validate=True)), "base64 text"
        except binascii.Error:
            pass
    if all(0x20 <= b < 0x7F for b in data):
        return 0, "text that is neither hex nor base64 (a passphrase?)"
    return len(data), "raw bytes"


def read_secret_file(path: str) -> bytes:
    """The secret in ``path``: surrounding whitespace stripped, after checking that only the
    master's user can read it and that it is strong enough. Never logs the secret."""
    try:
        # O_NONBLOCK: a FIFO planted at the path (say in /tmp) is refused below as no regular
        # file instead of holding the start for ever; on a regular file it changes nothing.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        euid = os.geteuid()
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"{path} is not a regular file")
        if st.st_uid != euid:
            raise SecretError(
                f"{path} is owned by uid {st.st_uid}, not by uid {euid} that the master runs "
                f"as: another user controls the cluster secret. Fix: chown {euid} {path}"
            )
        if mode & 0o077:
            raise SecretError(
                f"{path} has mode {mode:04o}: group or others may read or change the cluster "
                f"secret. Fix: chmod 0600 {path} (and, since it may have been read, generate a "
                "new secret for every master)"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks).strip()
    have, form = secret_strength(data)
    if have < MIN_SECRET_BYTES:
        raise SecretError(
            f"{path} holds {have} bytes of key material ({form}); at least {MIN_SECRET_BYTES} "
            "random bytes are required, as hex or base64 text or raw bytes. Generate one "
            f"with: {HOW_TO_GENERATE.format(path=path)} (or openssl rand -hex 32)"
        )
    return data


def generate(path: str, *, overwrite: bool = False) -> str:
    """Write a new secret (32 random bytes as 64 hex digits and a newline) to ``path``,
    mode 0600, atomically; refuses to replace an existing file unless ``overwrite``."""
    if os.path.lexists(path) and not overwrite:
        raise SecretError(
            f"{path} exists; not replacing a cluster secret (pass --overwrite to replace it, "
            "then copy the new file to every master)"
        )
    data = (secrets.token_hex(MIN_SECRET_BYTES) + "\n").encode()
    atomic_write(path, data, prefix=".secret-", mode=0o600, durable=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m saltext_raft secret",
        description="Generate or check the saltext-raft cluster secret file.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a new secret (mode 0600) to PATH")
    gen.add_argument("path")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing file")
    chk = sub.add_parser("check", help="check PATH as the engine would (owner, mode, strength)")
    chk.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            generate(args.path, overwrite=args.overwrite)
            print(f"wrote a new cluster secret to {args.path} (mode 0600); copy it to every master")
        else:
            read_secret_file(args.path)
            print(f"{args.path}: usable as the cluster secret")
    except SecretError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
