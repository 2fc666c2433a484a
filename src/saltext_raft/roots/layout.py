"""Where the replicated roots live in the replicated cache, and which names they accept.

Lives here: the bank and key names of the roots store, the chunk size and the file size cap,
the manifest's format, and the checks of everything that becomes a path on a receiving master
(relative paths, environment names, content hashes, modes). Must not live here: reading or
writing trees (:mod:`.scan`, :mod:`.apply`), the cache calls (:mod:`.sync`), Salt.

Layout (banks of the replicated cache)::

    saltext_raft_roots/manifests     file_roots    {"format": 1, "envs": {env: {path: [sha256,
                                     pillar_roots   size, mode]}}, "source": <master id>,
                                                    "at": <seconds>}
    saltext_raft_roots/blobs/<sha>   000000 ...    the file's bytes, CHUNK_BYTES per chunk
                                     info          {"size": n, "chunks": k}  (written last)

Content is addressed by its SHA-256: a file that did not change is never sent again, and two
paths with the same content share one blob. A blob counts as present only once its ``info``
key exists, which is written after every chunk; a manifest is committed only after every blob
it names is present. So a receiving master never sees a manifest entry whose chunks are not
all committed, and a sync interrupted between chunks leaves a blob without ``info`` that the
next sync sends again (and then removes if nothing names it).

Why 512 KiB chunks: one log entry may carry at most ``max_entry_bytes`` (4 MiB,
``runtime.limits.DEFAULT_MAX_ENTRY_BYTES``), so a 16 MiB file cannot be one value. The
cache service closes a batch of writes at 1 MiB of values (``replicated.service.
MAX_BATCH_BYTES``), followers forward proposals in batches of 1 MiB
(``runtime.limits.PROPOSAL_BATCH_BYTES``) and the core packs entries into APPEND messages of
``max_msg_bytes`` (1 MiB, ``core.config``). A 512 KiB chunk plus its framing (the payload
header, the batch and the envelope: well under 1 KiB) stays below all of them, so a chunk
never travels as an oversized single entry, two chunks share a batch, and one chunk fits an
APPEND with room for heartbeats. Its base64 form (683 KiB) is far below the control socket's
16 MiB line limit. Smaller chunks would cost more entries (a 16 MiB file is 32 entries at
this size) for no gain.

Why a 16 MiB cap per file (``raft_roots_max_file_bytes``, at most :data:`MAX_FILE_BYTES_LIMIT`):
every master's engine keeps the replicated cache, these blobs included, in memory and in its
snapshots. Roots are states, pillars, templates and small artefacts; large packages belong on
a package repository. A file over the cap is refused by the sync with its path and size.
"""

from __future__ import annotations

import re

#: Top bank of the roots store; nothing else writes below it.
ROOTS_BANK = "saltext_raft_roots"
#: One key per kind of root: the manifest of that kind.
MANIFESTS_BANK = f"{ROOTS_BANK}/manifests"
#: One sub-bank per blob (by SHA-256).
BLOBS_BANK = f"{ROOTS_BANK}/blobs"
#: Key of a blob's size and chunk count, written after its chunks.
INFO_KEY = "info"
#: The kinds of root replicated, as Salt's option names.
KINDS = ("file_roots", "pillar_roots")
#: Version of the manifest format.
MANIFEST_FORMAT = 1

#: Bytes of one chunk (see the module docstring for why).
CHUNK_BYTES = 512 << 10
#: Default largest file replicated (``raft_roots_max_file_bytes``).
DEFAULT_MAX_FILE_BYTES = 16 << 20
#: The largest value ``raft_roots_max_file_bytes`` accepts.
MAX_FILE_BYTES_LIMIT = 64 << 20
#: Modes a replicated file gets: executable if the source file was executable by anyone, and
#: private (owner only) if the source file was not readable by others (a pillar file holding
#: secrets stays unreadable to other local users on every master). Nothing else (no setuid, no
#: group or world write) is carried.
MODE_EXEC = 0o755
MODE_PLAIN = 0o644
MODE_PRIVATE_EXEC = 0o700
MODE_PRIVATE = 0o600
MODES = (MODE_EXEC, MODE_PLAIN, MODE_PRIVATE_EXEC, MODE_PRIVATE)
#: Name prefix of the temporary files a receiving master writes before renaming them into
#: place; a scan skips them.
TEMP_PREFIX = ".raft-roots-"
#: Longest path component in bytes (Linux NAME_MAX).
NAME_MAX = 255
#: Longest relative path in bytes (Linux PATH_MAX less room for the root).
PATH_MAX = 3072
#: Characters of an error message that quote a refused value.
SHOWN = 80

SHA_RE = re.compile(r"\A[0-9a-f]{64}\Z")


class BadRootPath(ValueError):
    """A path, environment, hash or mode the roots store refuses; the message says why."""


def shown(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def check_relpath(path) -> str:
    """Return ``path`` if it is a relative path that stays under its root (``/``-separated, no
    empty, ``.`` or ``..`` part, no NUL or control character, valid UTF-8), else raise
    :class:`BadRootPath`."""
    if not isinstance(path, str) or not path:
        raise BadRootPath(f"path {shown(path)} is not a non-empty string")
    if path.startswith("/"):
        raise BadRootPath(f"path {shown(path)} is absolute")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadRootPath(f"path {shown(path)} has an empty, '.' or '..' part")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadRootPath(f"path {shown(path)} contains NUL or control characters")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:  # a name with bytes that are not UTF-8 (os.fsdecode)
        raise BadRootPath(
            f"path {shown(path)} is not valid UTF-8 (the log cannot carry it): rename it"
        ) from None
    if len(encoded) > PATH_MAX or any(len(p.encode("utf-8")) > NAME_MAX for p in parts):
        raise BadRootPath(f"path {shown(path)} is too long")
    if parts[-1].startswith(TEMP_PREFIX):
        raise BadRootPath(f"path {shown(path)} uses the temporary prefix {TEMP_PREFIX!r}")
    return path


def check_env(env) -> str:
    """Return ``env`` if it can name a Salt environment of the manifest, else raise."""
    if not isinstance(env, str) or not env or len(env) > NAME_MAX:
        raise BadRootPath(f"environment {shown(env)} is not a non-empty string of <= 255 chars")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in env) or "/" in env:
        raise BadRootPath(f"environment {shown(env)} contains '/' or control characters")
    return env


def check_sha(sha) -> str:
    if not isinstance(sha, str) or not SHA_RE.match(sha):
        raise BadRootPath(f"content hash {shown(sha)} is not a lowercase SHA-256")
    return sha


def file_mode(mode: int) -> int:
    """The mode a replicated file gets for a source file of mode ``mode``."""
    if mode & 0o004:
        return MODE_EXEC if mode & 0o111 else MODE_PLAIN
    return MODE_PRIVATE_EXEC if mode & 0o111 else MODE_PRIVATE


def blob_bank(sha: str) -> str:
    return f"{BLOBS_BANK}/{check_sha(sha)}"


def chunk_key(index: int) -> str:
    return f"{index:06d}"


def chunk_count(size: int) -> int:
    """Chunks of a file of ``size`` bytes (an empty file has none)."""
    return -(-size // CHUNK_BYTES)


def chunk_bytes(value) -> bytes | None:
    """A chunk as read back from the cache: Salt's payload decoding turns bytes that happen
    to be valid UTF-8 into ``str`` (``salt.payload.loads``), so a ``str`` is encoded back (the
    same bytes: the decoding was exact). None for anything else (a missing chunk reads as
    ``{}``). The blob's SHA-256 is checked after reassembly either way."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return None


def entry(sha: str, size: int, mode: int) -> list:
    """One file of a manifest."""
    return [sha, int(size), file_mode(mode)]


def manifest(envs: dict, source: str, at: int) -> dict:
    return {"format": MANIFEST_FORMAT, "envs": envs, "source": source, "at": int(at)}


def check_manifest(kind: str, value, max_file_bytes: int) -> dict:
    """``{env: {path: (sha, size, mode)}}`` of a manifest read from the cache; raises
    :class:`BadRootPath` naming the first thing wrong. An absent manifest is empty."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict) or value.get("format") != MANIFEST_FORMAT:
        raise BadRootPath(f"{kind} manifest has an unknown format: {shown(value)}")
    envs = value.get("envs")
    if not isinstance(envs, dict):
        raise BadRootPath(f"{kind} manifest has no environments mapping")
    out: dict = {}
    for env, files in envs.items():
        check_env(env)
        if not isinstance(files, dict):
            raise BadRootPath(f"{kind} manifest: environment {shown(env)} is not a mapping")
        checked = {}
        for path, item in files.items():
            check_relpath(path)
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise BadRootPath(f"{kind}/{env}/{path}: malformed entry {shown(item)}")
            sha, size, mode = item
            check_sha(sha)
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size:
                raise BadRootPath(f"{kind}/{env}/{path}: bad size {shown(size)}")
            if size > max_file_bytes:
                raise BadRootPath(
                    f"{kind}/{env}/{path}: {size} bytes is over this master's "
                    f"raft_roots_max_file_bytes ({max_file_bytes})"
                )
            if mode not in MODES:
                raise BadRootPath(
                    f"{kind}/{env}/{path}: mode {shown(mode)} is not 0644/0755/0600/0700"
                )
            checked[path] = (sha, size, mode)
        out[env] = checked
    return out
