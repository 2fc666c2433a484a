"""A Salt master cluster with nothing shared (issue 20), on Salt 3007.16 and 3008.4.

Three masters (127.0.0.1-3) in Salt's master cluster mode (``cluster_id``, ``cluster_peers``),
each with its own ``root_dir``, ``pki_dir``, ``cachedir`` and ``cluster_pki_dir``: no path is
shared (:func:`test_no_two_masters_share_a_path` checks it). What every master must agree on
travels through the raft engine instead: the job cache (``master_job_cache: raft``), Salt's
cluster secrets (engine option ``cluster_secrets``: the committed cluster key fingerprint, the
session key ``.aes``, the peers' public keys) and, on 3008, minion keys
(``keys.cache_driver: raft``). The operator's one provisioned file is the cluster key pair
(``cluster.pem``/``cluster.pub``), copied into each ``cluster_pki_dir`` before the first start,
as docs/nothing-shared.md says.

Minion keys are replicated on both lines: on 3008 by ``keys.cache_driver: raft``, on 3007 by
the engine option ``keys: replicate`` (docs/keys.md), which keeps each master's own
``cluster_pki_dir/minions*`` directories in step.

Replicated roots (``raft_roots``): master 1's ``file_roots``/``pillar_roots`` reach every other
master's own roots through ``salt-run raft.sync_roots``, and a minion attached to each master
gets the same file.

The tests share one cluster and run in file order (the full restart last); each also runs alone
(``pytest -k``). Every
wait is bounded and says what it waited for; every daemon is stopped by its factory (PID).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil

import pytest
import salt.config
import salt.crypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pytestshellutils.utils import ports

from saltext_raft.master.clustersecrets import AES_FILE
from saltext_raft.master.clustersecrets import PEERS_DIR
from saltext_raft.testing.cluster import RaftCluster
from saltext_raft.testing.cluster import run_json
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until
from tests.scenarios.masters import starting
from tests.scenarios.masters import wait_for

pytest.importorskip("saltfactories")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Salt 3008 keeps minion keys behind a cache driver (``keys.cache_driver: raft``); on 3007 the
#: engine keeps each master's key directories in step (engine option ``keys: replicate``).
SALT_3008 = "keys.cache_driver" in salt.config.DEFAULT_MASTER_OPTS

JOB_MINIONS = {"ns-minion-2": 1, "ns-minion-3": 2}  # minion id -> index of its master
MINION_KEYS = "ns-keys-minion"  # the key scenarios' minion (attached to master 1)
#: A minion attached to each master, for what each master serves (the roots scenarios).
SERVED_BY = {"127.0.0.1": MINION_KEYS, "127.0.0.2": "ns-minion-2", "127.0.0.3": "ns-minion-3"}
ROOTS_FILE = "ns/hello.txt"  # under salt://
#: Paths a master writes that must be its own.
PATH_OPTIONS = ("root_dir", "pki_dir", "cachedir", "cluster_pki_dir", "sock_dir")
#: Seconds between two passes of each master's maintenance process (key rotation included).
LOOP_INTERVAL = 3
_names = itertools.count(1)


def no_auto_accept(master, payload):  # pylint: disable=unused-argument
    """pytest-salt-factories would run ``salt-key --accept`` on every pending key."""


def key_pair() -> tuple[bytes, bytes]:
    """A fresh RSA pair as Salt writes its own (PKCS#1 private, SubjectPublicKeyInfo public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, pub


def provision_cluster_key(cluster_pki_dir: str, pair: tuple[bytes, bytes]) -> None:
    """What the operator does once per master: copy cluster.pem and cluster.pub in."""
    os.makedirs(cluster_pki_dir, mode=0o700, exist_ok=True)
    for name, data, mode in (("cluster.pem", pair[0], 0o400), ("cluster.pub", pair[1], 0o644)):
        path = os.path.join(cluster_pki_dir, name)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o600)
            os.unlink(path)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)
        os.chmod(path, mode)


class NothingShared:
    """The module's cluster: a :class:`RaftCluster` plus the per-master directories."""

    def __init__(self, salt_factories, tmp_path_factory):
        self.pair = key_pair()
        self.cluster_pki = {}
        pool_port = ports.get_unused_localhost_port()
        ids = [f"127.0.0.{i}" for i in (1, 2, 3)]
        for mid in ids:
            self.cluster_pki[mid] = str(tmp_path_factory.mktemp(f"ns-cluster-pki-{mid}"))
            os.chmod(self.cluster_pki[mid], 0o700)
            provision_cluster_key(self.cluster_pki[mid], self.pair)

        def master_config(mid):
            config = {
                "cluster_id": "nothing-shared",
                "cluster_peers": [m for m in ids if m != mid],
                "cluster_pki_dir": self.cluster_pki[mid],
                "cluster_pool_port": pool_port,
                "master_job_cache": "raft",
                "raft_roots": True,  # file_roots / pillar_roots through the log (docs/roots.md)
                "open_mode": False,
                "auto_accept": False,
                "loop_interval": LOOP_INTERVAL,  # how often maintenance looks for a rotation
            }
            if SALT_3008:
                config["keys.cache_driver"] = "raft"
            return config

        self.cluster = RaftCluster(
            salt_factories,
            tmp_path_factory.mktemp("ns-secret"),
            3,
            # 3008's core consensus keeps its log through ``cache``: it must stay local there.
            cache="localfs" if SALT_3008 else "raft",
            engine={"cluster_secrets": True, **({} if SALT_3008 else {"keys": "replicate"})},
            master_config=master_config,
            name=f"ns{next(_names)}",
            factory_kwargs={"on_auth_event_callback": no_auto_accept},
        )
        self.ids = ids
        self.minions: dict = {}

    @property
    def masters(self):
        return self.cluster.masters

    def aes(self, mid) -> str:
        with open(os.path.join(self.cluster_pki[mid], AES_FILE), encoding="ascii") as fh:
            return fh.read().strip()

    def peer_files(self, mid) -> list[str]:
        return sorted(os.listdir(os.path.join(self.cluster_pki[mid], PEERS_DIR)))

    def secrets_agree(self) -> bool:
        try:
            aes = {self.aes(m) for m in self.ids}
            peers = [self.peer_files(m) for m in self.ids]
        except OSError:
            return False
        return len(aes) == 1 and all(p == [f"{m}.pub" for m in self.ids] for p in peers)

    def wait_ready(self, ids=None, timeout=120) -> None:
        """Every gate of ``ids`` open, and the cluster secrets the same in every directory."""
        self.cluster.wait_gates_open(ids, timeout=timeout)
        wait_for(
            self.secrets_agree,
            60,
            "the same .aes and every member's peers/<id>.pub in every cluster_pki_dir",
            interval=0.5,
        )

    def key_state(self, mid, minion_id):
        ret = self.masters[mid].salt_key_cli(timeout=60).run("-L", "--out", "json", _timeout=60)
        assert ret.returncode == 0, ret
        for state, names in (ret.data or {}).items():
            if minion_id in (names or []):
                return state
        return None

    def start_minion(self, stack, mid, minion_id, accept_on=None):
        """A minion attached to master ``mid``: its pending key is accepted with ``salt-key``
        on ``accept_on`` (default: master 1) once every master lists it."""
        m = self.masters[mid]
        minion = m.salt_minion_daemon(minion_id, overrides={"master": mid})
        with starting(minion) as join:
            for other in self.ids:
                wait_for(
                    lambda other=other: self.key_state(other, minion_id) == "minions_pre",
                    120,
                    f"{minion_id} pending on {other}",
                    interval=0.5,
                )
            accept = self.masters[accept_on or self.ids[0]]
            ret = accept.salt_key_cli(timeout=60).run("-y", "-a", minion_id, _timeout=60)
            assert ret.returncode == 0, ret
            assert not join(), f"{minion_id} did not start after its key was accepted"
        stack.callback(minion.terminate)
        self.minions[minion_id] = minion
        return minion


@pytest.fixture(scope="module")
def ns(salt_factories, tmp_path_factory):
    state = NothingShared(salt_factories, tmp_path_factory)
    with contextlib.ExitStack() as stack:
        stack.callback(state.cluster.close)
        state.cluster.start()
        state.wait_ready()
        state.stack = stack
        yield state


def published_jid(master, target, *args) -> str:
    """Publish to the comma-separated minion list ``target`` without waiting; the job id."""
    ret = master.salt_cli(timeout=60).run("--async", "-L", *args, minion_tgt=target, _timeout=60)
    found = re.search(r"job ID: (\d{20})", f"{ret.stdout}{ret.stderr}")
    assert ret.returncode == 0 and found, ret
    return found.group(1)


def try_publish(master, target, *args) -> str | None:
    """:func:`published_jid`, or None if the master refused the publish."""
    try:
        return published_jid(master, target, *args)
    except Exception:  # pylint: disable=broad-except
        return None


def runner(ns, mid, *args, timeout=120):
    """``salt-run <args> --out json`` on master ``mid`` as data, or None if it failed or ran
    out of time (on a loaded machine a runner can: callers wait on it with a bound)."""
    try:
        rc, data, _ = run_json(ns.masters[mid], *args, timeout=timeout)
    except Exception:  # pylint: disable=broad-except
        return None
    return data if rc == 0 else None


def lookup(ns, mid, jid, timeout=120):
    return runner(ns, mid, "jobs.lookup_jid", jid, timeout=timeout)


def status_of(ns, mid) -> dict:
    """``salt-run raft.status`` on ``mid`` (waited for: the engine may answer late)."""
    return wait_for(
        lambda: runner(ns, mid, "raft.status"), 120, f"salt-run raft.status on {mid}", interval=2
    )


def ensure_job_minions(ns):
    for minion_id, index in JOB_MINIONS.items():
        if minion_id not in ns.minions:
            ns.start_minion(ns.stack, ns.ids[index], minion_id)


# ----------------------------------------------------------------------------------------------
def test_no_two_masters_share_a_path(ns):
    paths = {}
    for mid in ns.ids:
        config = ns.masters[mid].config
        for option in PATH_OPTIONS:
            paths[(mid, option)] = os.path.realpath(config[option])
        for option in ("file_roots", "pillar_roots"):
            for env, dirs in (config.get(option) or {}).items():
                for i, d in enumerate(dirs):
                    paths[(mid, f"{option}:{env}:{i}")] = os.path.realpath(d)
    assert paths[(ns.ids[0], "cluster_pki_dir")] == os.path.realpath(ns.cluster_pki[ns.ids[0]])
    for (a, pa), (b, pb) in itertools.combinations(paths.items(), 2):
        if a[0] == b[0]:
            continue  # one master's own paths may nest (cachedir under root_dir)
        assert pa != pb and not pb.startswith(pa + os.sep) and not pa.startswith(pb + os.sep), (
            f"{a} and {b} share a path: {pa}, {pb}"
        )


def test_every_master_holds_the_same_cluster_secrets_in_its_own_directory(ns):
    ns.wait_ready()
    fingerprints = set()
    for mid in ns.ids:
        status = status_of(ns, mid)
        secrets = status["cluster_secrets"]
        assert secrets["refusal"] is None and status["gate"]["open"], status
        assert secrets["cluster_pki_dir"] == ns.cluster_pki[mid]
        fingerprints.add(secrets["cluster_key"])
        st = os.lstat(os.path.join(ns.cluster_pki[mid], AES_FILE))
        assert st.st_mode & 0o077 == 0, f"{mid}'s .aes is readable by others"
    assert len(fingerprints) == 1 and next(iter(fingerprints)).startswith("sha256:")


def test_a_job_published_on_master_1_is_complete_on_every_master(ns):
    ensure_job_minions(ns)
    m1 = ns.masters[ns.ids[0]]
    jid = published_jid(m1, ",".join(JOB_MINIONS), "test.echo", "nothing-shared")
    want = dict.fromkeys(JOB_MINIONS, "nothing-shared")
    for mid in ns.ids:
        wait_for(
            lambda mid=mid: lookup(ns, mid, jid) == want,
            90,
            f"job {jid} complete in jobs.lookup_jid on {mid}",
            interval=1,
        )
    ns.last_jid = jid


def test_a_rotation_of_the_session_key_reaches_every_master(ns):
    """Master 1 rotates the cluster session key as Salt does after a key delete (the dropfile
    its maintenance process picks up): every master's ``.aes`` follows, and the job minions
    still answer a job published on master 1."""
    ensure_job_minions(ns)
    ns.wait_ready()
    before = ns.aes(ns.ids[0])
    m1 = ns.masters[ns.ids[0]]
    salt.crypt.dropfile(m1.config["cachedir"], m1.config["user"], m1.config["id"])
    wait_for(
        lambda: ns.secrets_agree() and ns.aes(ns.ids[0]) != before,
        60 + 3 * LOOP_INTERVAL,
        "a new .aes on master 1, the same on every master",
        interval=0.5,
    )
    jid = published_jid(m1, ",".join(JOB_MINIONS), "test.echo", "after-rotation")
    want = dict.fromkeys(JOB_MINIONS, "after-rotation")
    wait_for(
        lambda: lookup(ns, ns.ids[0], jid) == want,
        120,
        f"job {jid} answered after the rotation",
        interval=2,
    )


@pytest.mark.timeout(600)
def test_a_master_with_a_different_cluster_key_stays_closed(ns):
    m3 = ns.ids[2]
    ns.wait_ready()
    ns.cluster.stop(m3)
    provision_cluster_key(ns.cluster_pki[m3], key_pair())  # not the cluster's pair
    try:
        ns.cluster.restart(m3)

        def refused():
            reason = ns.cluster.status(m3).get("reason") or ""
            return "differs from the cluster's" in reason

        wait_for(refused, 90, f"{m3}'s gate closed for its cluster key", interval=0.5)
        status = status_of(ns, m3)
        assert not status["gate"]["open"], status
        assert "differs from the cluster's" in status["gate"]["reason"], status
        assert "differs from the cluster's" in (status["cluster_secrets"]["refusal"] or "")
        with open(ns.masters[m3].config["log_file"], encoding="utf-8") as fh:
            assert "differs from the cluster's" in fh.read()
        # still closed a while later: it never opens with the wrong key
        for mid in ns.ids[:2]:
            assert ns.cluster.gate_open(mid), mid
        assert not ns.cluster.gate_open(m3)
    finally:
        ns.cluster.stop(m3)
        provision_cluster_key(ns.cluster_pki[m3], ns.pair)
        ns.cluster.restart(m3)
    ns.wait_ready()


# --- minion keys (3008: keys.cache_driver raft; 3007: the engine option keys: replicate) ------
def test_a_key_accepted_on_one_master_is_accepted_on_the_others(ns):
    ns.wait_ready()
    ns.start_minion(ns.stack, ns.ids[0], MINION_KEYS, accept_on=ns.ids[1])
    for mid in ns.ids:
        wait_for(
            lambda mid=mid: ns.key_state(mid, MINION_KEYS) == "minions",
            60,
            f"{MINION_KEYS} accepted on {mid}",
            interval=0.5,
        )


@pytest.mark.timeout(600)
def test_a_master_down_during_an_accept_learns_it_on_restart(ns):
    ns.wait_ready()
    m3 = ns.ids[2]
    minion_id = "ns-accepted-while-down"
    ns.cluster.stop(m3)
    try:
        m1 = ns.masters[ns.ids[0]]
        minion = m1.salt_minion_daemon(minion_id, overrides={"master": ns.ids[0]})
        with starting(minion) as join:
            wait_for(
                lambda: ns.key_state(ns.ids[0], minion_id) == "minions_pre",
                60,
                f"{minion_id} pending on master 1",
                interval=0.5,
            )
            ret = m1.salt_key_cli(timeout=60).run("-y", "-a", minion_id, _timeout=60)
            assert ret.returncode == 0, ret
            assert not join()
        ns.stack.callback(minion.terminate)
    finally:
        ns.cluster.restart(m3)
    ns.wait_ready()
    assert ns.key_state(m3, minion_id) == "minions"


@pytest.mark.timeout(600)
def test_a_key_deleted_while_a_master_was_down_stays_deleted_there(ns):
    ns.wait_ready()
    minion_id = "ns-deleted-while-down"
    m1 = ns.masters[ns.ids[0]]
    minion = m1.salt_minion_daemon(minion_id, overrides={"master": ns.ids[0]})
    with starting(minion) as join:
        wait_for(
            lambda: all(ns.key_state(m, minion_id) == "minions_pre" for m in ns.ids),
            60,
            f"{minion_id} pending on every master",
            interval=0.5,
        )
        ret = m1.salt_key_cli(timeout=60).run("-y", "-a", minion_id, _timeout=60)
        assert ret.returncode == 0, ret
        assert not join()
    minion.terminate()  # a deleted minion would only re-register as pending
    m2 = ns.ids[1]
    wait_for(lambda: ns.key_state(m2, minion_id) == "minions", 30, f"{minion_id} on {m2}")
    ns.cluster.stop(m2)
    try:
        ret = m1.salt_key_cli(timeout=60).run("-y", "-d", minion_id, _timeout=60)
        assert ret.returncode == 0, ret
    finally:
        ns.cluster.restart(m2)
    ns.wait_ready()
    for mid in ns.ids:
        assert ns.key_state(mid, minion_id) is None, mid
    assert not os.path.exists(
        os.path.join(ns.masters[m2].config["pki_dir"], "minions", minion_id)
    ) and not os.path.exists(os.path.join(ns.cluster_pki[m2], "minions", minion_id))
    shutil.rmtree(os.path.join(minion.config["pki_dir"]), ignore_errors=True)


# --- replicated roots (raft_roots, salt-run raft.sync_roots): each master's own trees ----------
def own_root(ns, mid, kind: str) -> str:
    """Master ``mid``'s own first ``file_roots``/``pillar_roots`` directory of ``base``."""
    return ns.masters[mid].config[f"{kind}_roots"]["base"][0]


def write_text(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def read_text(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def sync_roots(ns, mid, *args) -> dict:
    data = runner(ns, mid, "raft.sync_roots", *args)
    assert isinstance(data, dict) and data.get("result") is True, data
    return data


def served(ns, mid, path):
    """What the minion attached to master ``mid`` gets for ``salt://path`` (False: nothing)."""
    minion = ns.minions[SERVED_BY[mid]]
    ret = minion.salt_call_cli(timeout=60).run("cp.get_file_str", f"salt://{path}", _timeout=60)
    return ret.data if ret.returncode == 0 else ("error", ret.stdout[-300:], ret.stderr[-300:])


def ensure_served_minions(ns):
    ensure_job_minions(ns)
    if MINION_KEYS not in ns.minions:
        ns.start_minion(ns.stack, ns.ids[0], MINION_KEYS, accept_on=ns.ids[1])


def served_everywhere(ns, path, *wants, timeout=90) -> None:
    """Every master serves ``salt://path`` as one of ``wants``."""
    for mid in ns.ids:
        wait_for(
            lambda mid=mid: served(ns, mid, path) in wants,
            timeout,
            f"master {mid} to serve salt://{path} as one of {wants!r}",
            interval=1,
        )


@pytest.mark.timeout(600)
def test_a_file_changed_in_the_roots_is_served_by_every_master(ns):
    """Files and pillar written into master 1's own roots reach every master's own roots with
    ``salt-run raft.sync_roots``; a change and a delete do too; each master serves the same."""
    ns.wait_ready()
    ensure_served_minions(ns)
    first = ns.ids[0]
    files, pillar = own_root(ns, first, "file"), own_root(ns, first, "pillar")
    write_text(os.path.join(files, ROOTS_FILE), "version 1\n")
    write_text(os.path.join(files, "ns", "gone.txt"), "soon deleted\n")
    write_text(os.path.join(pillar, "top.sls"), "base:\n  '*':\n    - ns\n")
    write_text(os.path.join(pillar, "ns.sls"), "ns_value: replicated pillar\n")
    preview = sync_roots(ns, first, "test=True")
    assert preview["test"] is True and len(preview["added"]) == 4, preview
    report = sync_roots(ns, first)
    assert sorted(report["added"]) == [
        "file_roots/base/ns/gone.txt",
        f"file_roots/base/{ROOTS_FILE}",
        "pillar_roots/base/ns.sls",
        "pillar_roots/base/top.sls",
    ], report
    assert sync_roots(ns, first)["sent_bytes"] == 0  # nothing changed: nothing sent
    served_everywhere(ns, ROOTS_FILE, "version 1\n")
    # Salt 3008 masks pillar values in output unless asked not to; 3007 has no such argument
    unmask = ["unmask=True"] if SALT_3008 else []
    for mid in ns.ids:
        minion = ns.minions[SERVED_BY[mid]]
        ret = minion.salt_call_cli(timeout=60).run("pillar.get", "ns_value", *unmask, _timeout=60)
        assert ret.returncode == 0 and ret.data == "replicated pillar", (mid, ret)

    write_text(os.path.join(files, ROOTS_FILE), "version 2\n")
    os.unlink(os.path.join(files, "ns", "gone.txt"))
    report = sync_roots(ns, first)
    assert report["changed"] == [f"file_roots/base/{ROOTS_FILE}"], report
    assert report["deleted"] == ["file_roots/base/ns/gone.txt"], report
    served_everywhere(ns, ROOTS_FILE, "version 2\n")
    for mid in ns.ids:
        wait_for(
            lambda mid=mid: (
                read_text(os.path.join(own_root(ns, mid, "file"), "ns", "gone.txt")) is None
            ),
            60,
            f"ns/gone.txt removed from {mid}'s own file_roots",
        )
    served_everywhere(ns, "ns/gone.txt", "", False, timeout=60)  # cp: "" or False if absent
    ns.roots_synced = "version 2\n"


@pytest.mark.timeout(600)
def test_a_master_down_during_a_roots_sync_gets_it_on_restart(ns):
    ns.wait_ready()
    ensure_served_minions(ns)
    first, second = ns.ids[0], ns.ids[1]
    path = os.path.join(own_root(ns, first, "file"), ROOTS_FILE)
    target = os.path.join(own_root(ns, second, "file"), ROOTS_FILE)
    ns.cluster.stop(second)
    try:
        write_text(path, "changed while master 2 was down\n")
        report = sync_roots(ns, first)  # masters 1 and 3 are a quorum
        assert f"file_roots/base/{ROOTS_FILE}" in report["changed"] + report["added"], report
        assert read_text(target) != "changed while master 2 was down\n"
    finally:
        ns.cluster.restart(second)
    ns.wait_ready()
    wait_for(
        lambda: read_text(target) == "changed while master 2 was down\n",
        90,
        "master 2 to write the change into its own file_roots after its restart",
    )
    served_everywhere(ns, ROOTS_FILE, "changed while master 2 was down\n")
    status = status_of(ns, second)
    assert status["roots"]["last_pass"]["counts"]["failed"] == 0, status["roots"]
    ns.roots_synced = "changed while master 2 was down\n"


# --- last: it restarts every master -------------------------------------------------------------
@pytest.mark.timeout(900)
def test_a_full_restart_loses_nothing_and_every_gate_reopens(ns):
    if not getattr(ns, "last_jid", None):
        test_a_job_published_on_master_1_is_complete_on_every_master(ns)
    jid = ns.last_jid
    aes = ns.aes(ns.ids[0])
    for mid in ns.ids:
        ns.cluster.stop(mid)
    for mid in ns.ids:
        ns.cluster.restart(mid)
    ns.wait_ready(timeout=180)
    want = dict.fromkeys(JOB_MINIONS, "nothing-shared")
    for mid in ns.ids:
        wait_for(
            lambda mid=mid: lookup(ns, mid, jid) == want,
            120,
            f"job {jid} still complete on {mid} after the full restart",
            interval=2,
        )
        for minion_id in JOB_MINIONS:
            assert ns.key_state(mid, minion_id) == "minions", (mid, minion_id)
    assert ns.aes(ns.ids[0]) == aes
    if getattr(ns, "roots_synced", None):  # the roots scenarios ran: every copy survived
        for mid in ns.ids:
            assert read_text(os.path.join(own_root(ns, mid, "file"), ROOTS_FILE)) == (
                ns.roots_synced
            ), mid
    ns.restarted = True


def log_tail(path, pattern="ERROR|WARNING|auth|Authentication|retry", lines=15) -> str:
    """The last ``lines`` lines of a daemon's log matching ``pattern`` (for a failure message)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            hits = [line.rstrip() for line in fh if re.search(pattern, line)]
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(hits[-lines:])


def ran_any(log_file, jids) -> bool:
    """Whether the minion logging to ``log_file`` started any of the jobs ``jids``."""
    try:
        with open(log_file, encoding="utf-8", errors="replace") as fh:
            return any(
                "Executing command" in line and any(jid in line for jid in jids) for line in fh
            )
    except OSError:
        return False


@pytest.mark.timeout(900)
def test_a_job_published_after_the_full_restart_is_answered(ns):
    if not getattr(ns, "restarted", False):
        test_a_full_restart_loses_nothing_and_every_gate_reopens(ns)
    # The minions come back to their masters and answer a job published on master 1. A publish
    # made before the masters have exchanged their peer keys again is not forwarded (Salt
    # forwards events once, without a queue), so a job that gets no answer is published anew.
    want = dict.fromkeys(JOB_MINIONS, "again")
    m1 = ns.masters[ns.ids[0]]
    attempts = []  # (jid or None, the last lookup seen on master 3)

    def answered():
        jid = try_publish(m1, ",".join(JOB_MINIONS), "test.echo", "again")
        attempts.append([jid, None])
        if jid is None:
            return None

        def complete():
            got = attempts[-1][1] = lookup(ns, ns.ids[2], jid, timeout=30)
            return got == want

        try:
            return wait_until(complete, 30, f"job {jid}", 3)
        except WaitTimeout:
            return None

    # On 3008 this needs Salt's own core request gate open, which Salt's consensus never
    # reopens after a full restart: the engine opens it once ours opens (core_gate,
    # master/coregate.py). Before that it failed here on every run.
    try:
        # 3007 answers within seconds when its minions are well (three runs alone: within 3 s
        # of the first publish); 3008 may need its core gate opened first.
        bound = 600 if SALT_3008 else 240
        what = "a job published on master 1 answered after the full restart"
        wait_until(answered, bound, what, 1)
    except WaitTimeout as exc:
        report = [str(exc), f"attempts (jid, last lookup on master 3): {attempts}"]
        for mid in ns.ids:
            report.append(f"{mid} readiness: {ns.cluster.status(mid)}")
            report.append(f"{mid} log:\n{log_tail(ns.masters[mid].config['log_file'])}")
        for minion_id in JOB_MINIONS:
            minion = ns.minions[minion_id]
            report.append(
                f"{minion_id} running={minion.is_running()} log:\n"
                f"{log_tail(minion.config['log_file'])}"
            )
        jids = [jid for jid, _ in attempts if jid]
        silent = [m for m in JOB_MINIONS if not ran_any(ns.minions[m].config["log_file"], jids)]
        report.append(f"minions that ran none of the attempts: {silent}")
        if silent and not SALT_3008:
            # Seen on 3007.16 after every full restart on one slow host (2026-12-08, four runs,
            # with follower_inline_saves on and off; once in stop 27 on another): after the
            # full restart one minion never runs another job. py-spy on its main process:
            # MinionManager.tune_in -> tornado PeriodicCallback._run -> zmq Context.__del__ ->
            # Context.destroy -> Context.term, blocked for good (a zmq context garbage-
            # collected on the minion's loop with a socket still open). That is Salt 3007's
            # minion, not the masters; the masters had the other minion's return at once. Only
            # a minion that ran none of the attempts makes it an xfail: if every minion ran
            # one and the lookups still missed, the masters are at fault and the test fails.
            pytest.xfail(
                "Salt 3007 minion hang after a full master restart (zmq Context.term in "
                "Context.__del__ on the minion's loop):\n" + "\n".join(report)
            )
        pytest.fail("\n".join(report))
