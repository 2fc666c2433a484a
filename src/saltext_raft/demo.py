"""The demo: ``python -m saltext_raft demo`` (or ``python3 dev.py demo``).

Brings up three Salt masters (127.0.0.1, .2, .3) with the ``raft`` engine and one minion,
waits until every request gate is open, prints ``salt-run raft.members``, SIGKILLs the
leader's whole process group, shows the new leader, answers ``test.ping`` through the minion,
starts a fourth master (127.0.0.4) that nobody added, which joins by itself as a learner and
is promoted to voter, then stops everything it started. Every wait is bounded; a failed step
exits non-zero saying which step.

Lives here: config generation for throw-away daemons under one temp dir, starting and stopping
them (each in its own process group, stopped by that group id even on Ctrl-C or failure), and
the script. Must not live here: anything the engine or the runners do (they are what is shown).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from saltext_raft.master.settings import readiness_path
from saltext_raft.waiting import WaitTimeout
from saltext_raft.waiting import wait_until

MASTERS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
FOURTH = "127.0.0.4"
MINION = "demo-minion"


class DemoError(Exception):
    """A step failed; the message says which and why."""


def free_port(hosts) -> int:
    """A TCP port free on every one of ``hosts`` (the masters share their port numbers)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for host in hosts:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise DemoError("could not find a free TCP port on the loopback addresses")


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def _yaml(data) -> str:
    # JSON is valid YAML: no PyYAML needed to write a Salt config.
    return json.dumps(data, indent=2) + "\n"


class Demo:
    def __init__(self, root: str, timeout: float, verbose: bool):
        self.root = root
        self.deadline = time.monotonic() + timeout
        self.t0 = time.monotonic()
        self.verbose = verbose
        self.bindir = os.path.dirname(sys.executable)
        self.procs: dict[str, subprocess.Popen] = {}
        hosts = [*MASTERS, FOURTH]
        self.ret_port = free_port(hosts)
        self.publish_port = free_port(hosts)
        self.raft_port = free_port(hosts)
        self.secret_file = os.path.join(root, "raft.secret")
        with open(self.secret_file, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_hex(32))
        os.chmod(self.secret_file, 0o600)
        self.user = getpass.getuser()

    # --- output and waiting -------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def wait(self, predicate, timeout: float, what: str):
        timeout = max(0.0, min(timeout, self.deadline - time.monotonic()))
        try:
            return wait_until(predicate, timeout, what)
        except WaitTimeout as exc:
            raise DemoError(str(exc)) from None

    # --- daemons ------------------------------------------------------------------------------
    def conf_dir(self, name: str) -> str:
        return os.path.join(self.root, name, "conf")

    def master_config(self, mid: str, peers: list[str]) -> str:
        root = os.path.join(self.root, mid)
        conf = self.conf_dir(mid)
        os.makedirs(conf, exist_ok=True)
        config = {
            "id": mid,
            "interface": mid,
            "user": self.user,
            "root_dir": root,
            "ret_port": self.ret_port,
            "publish_port": self.publish_port,
            "auto_accept": True,
            "log_level_logfile": "info",
            "engines": [
                {
                    "raft": {
                        "peers": {p: f"{p}:{self.raft_port}" for p in peers},
                        "port": self.raft_port,
                        "secret_file": self.secret_file,
                        "readiness_interval": 0.5,
                    }
                }
            ],
        }
        with open(os.path.join(conf, "master"), "w", encoding="utf-8") as fh:
            fh.write(_yaml(config))
        return conf

    def minion_config(self, master: str) -> str:
        conf = self.conf_dir(MINION)
        os.makedirs(conf, exist_ok=True)
        config = {
            "id": MINION,
            "user": self.user,
            "root_dir": os.path.join(self.root, MINION),
            "master": master,
            "master_port": self.ret_port,
            "log_level_logfile": "info",
        }
        with open(os.path.join(conf, "minion"), "w", encoding="utf-8") as fh:
            fh.write(_yaml(config))
        return conf

    def spawn(self, name: str, script: str, conf: str) -> None:
        log = open(os.path.join(self.root, f"{name}.out"), "wb")
        cmd = [sys.executable, os.path.join(self.bindir, script), "-c", conf, "-l", "quiet"]
        # Its own session: the daemon and every process it forks share one process group,
        # whose id is the PID we started, so one killpg() stops all of them.
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            self.procs.pop(name, None)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)
        limit = time.monotonic() + 15
        for name, proc in list(self.procs.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(limit - time.monotonic(), 0.1))
            # Whatever is left of the group (workers that ignored SIGTERM) goes now.
            self.kill(name, signal.SIGKILL)

    def start_master(self, mid: str, peers: list[str]) -> None:
        self.spawn(mid, "salt-master", self.master_config(mid, peers))

    def wait_master_up(self, mid: str) -> None:
        def up():
            proc = self.procs[mid]
            if proc.poll() is not None:
                raise DemoError(
                    f"salt-master {mid} exited with code {proc.returncode}; see "
                    f"{os.path.join(self.root, mid + '.out')} and its log under {self.root}/{mid}"
                )
            return port_open(mid, self.ret_port)

        try:
            self.wait(up, 90, f"master {mid}'s request port {self.ret_port}")
        except DemoError as exc:
            raise DemoError(f"{exc}\n{self.tail(mid)}") from None

    def tail(self, name: str, lines: int = 20) -> str:
        path = os.path.join(self.root, name, "var", "log", "salt", "master")
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return "last lines of its log:\n" + "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    # --- reading the cluster ------------------------------------------------------------------
    def ready_state(self, mid: str) -> dict:
        path = readiness_path(os.path.join(self.root, mid, "var", "cache", "salt", "master"))
        try:
            if time.time() - os.stat(path).st_mtime > 2.5:
                return {}
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def leader(self, ids) -> str | None:
        states = [self.ready_state(m) for m in ids]
        named = {s.get("leader") for s in states}
        if len(named) != 1 or not all(s.get("ready") for s in states):
            return None
        return named.pop() or None

    def cli(self, script: str, mid: str, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [sys.executable, os.path.join(self.bindir, script), "-c", self.conf_dir(mid), *args]
        cmd += ["--out", "json"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def members(self, mid: str) -> dict:
        ret = self.cli("salt-run", mid, "raft.members")
        try:
            data = json.loads(ret.stdout)
        except ValueError:
            data = None
        if ret.returncode != 0 or not isinstance(data, dict):
            raise DemoError(
                f"salt-run raft.members on {mid} failed (exit {ret.returncode}): "
                f"{(ret.stdout or ret.stderr).strip()[:500]}"
            )
        return data

    def show_members(self, data: dict) -> None:
        print(f"    leader {data['leader']}  term {data['term']}  commit {data['commit_index']}")
        for nid, m in sorted(data["members"].items()):
            print(
                f"    {nid:<11} {m['role']:<8} match {m['match_index']!s:<5} "
                f"lag {m['lag']!s:<4} last contact {m['last_contact']}"
            )

    def ping(self, via: str) -> bool:
        ret = self.cli("salt", via, MINION, "test.ping", "-t", "10", timeout=60)
        try:
            return json.loads(ret.stdout).get(MINION) is True
        except (ValueError, AttributeError):
            return False

    # --- the script ---------------------------------------------------------------------------
    def run(self) -> None:
        self.say(
            f"working directory {self.root}; ports: request {self.ret_port}, "
            f"publish {self.publish_port}, raft {self.raft_port}"
        )
        self.say(f"starting 3 masters with the raft engine: {', '.join(MASTERS)}")
        for mid in MASTERS:
            self.start_master(mid, MASTERS)
        for mid in MASTERS:
            self.wait_master_up(mid)
        t_ports = time.monotonic()
        self.say("request ports open; waiting for a leader and every gate to open")
        leader = self.wait(lambda: self.leader(MASTERS), 60, "a leader and all three gates open")
        self.say(
            f"ready: leader {leader}, all gates open "
            f"({time.monotonic() - t_ports:.1f}s after the last request port opened)"
        )

        home = next(m for m in MASTERS if m != leader)
        self.say(f"starting minion {MINION} attached to {home} (a follower)")
        self.spawn(MINION, "salt-minion", self.minion_config(home))
        self.wait(lambda: self.ping(home), 120, f"{MINION} to answer test.ping via {home}")
        self.say(f"{MINION} answers test.ping via {home}")

        self.say(f"salt-run raft.members (on the leader, {leader}):")
        self.show_members(self.members(leader))

        leader = self.wait(lambda: self.leader(MASTERS), 30, "a stable leader")
        if leader == home:
            self.say(f"{home} became leader meanwhile; moving leadership off the minion's master")
            other = next(m for m in MASTERS if m not in (home,))
            self.cli("salt-run", home, "raft.transfer_leader", f"node={other}")
            leader = self.wait(
                lambda: (lambda lead: lead if lead and lead != home else None)(
                    self.leader(MASTERS)
                ),
                30,
                "leadership to move",
            )
        survivors = [m for m in MASTERS if m != leader]
        self.say(f"SIGKILL of leader {leader}: its whole process group (master, engine, workers)")
        t_kill = time.monotonic()
        self.kill(leader)
        new = self.wait(
            lambda: (lambda lead: lead if lead and lead != leader else None)(
                self.leader(survivors)
            ),
            30,
            "a new leader among the survivors",
        )
        self.say(f"new leader {new} ({time.monotonic() - t_kill:.1f}s after the kill)")
        self.wait(lambda: self.ping(home), 60, f"{MINION} to answer test.ping via {home}")
        self.say(f"{MINION} still answers test.ping via {home}")

        self.say(
            f"adding a fourth master {FOURTH}: no raft.add, it is configured with the other "
            "masters as peers (itself left out) and asks them to add it (JOIN)"
        )
        t_join = time.monotonic()
        self.start_master(FOURTH, MASTERS)  # not in its own peers: it joins, it founds nothing
        self.wait_master_up(FOURTH)
        self.wait(lambda: FOURTH in self.members(new)["voters"], 60, f"{FOURTH} promoted")
        self.wait(lambda: self.ready_state(FOURTH).get("ready"), 30, f"{FOURTH}'s gate open")
        self.say(
            f"{FOURTH} joined as a learner, caught up and was promoted to voter; its gate is open "
            f"({time.monotonic() - t_join:.1f}s after its start)"
        )
        self.say(f"salt-run raft.members (on {new}):")
        self.show_members(self.members(new))


def _interrupt(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saltext_raft demo", description=__doc__)
    parser.add_argument("--timeout", type=float, default=420, help="overall bound (seconds)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for host in [*MASTERS, FOURTH]:
        with socket.socket() as s:
            try:
                s.bind((host, 0))
            except OSError as exc:
                print(
                    f"demo: cannot bind {host} ({exc}); the demo needs 127.0.0.1-4 "
                    "(Linux routes all of 127.0.0.0/8 to loopback)",
                    file=sys.stderr,
                )
                return 2
    if not shutil.which("salt-master", path=os.path.dirname(sys.executable)):
        print(
            f"demo: salt-master not found next to {sys.executable}: install Salt in this "
            "environment (python3 dev.py demo does it)",
            file=sys.stderr,
        )
        return 2
    root = tempfile.mkdtemp(prefix="srd-", dir="/tmp")  # short: AF_UNIX paths are limited
    demo = Demo(root, args.timeout, args.verbose)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        demo.run()
        demo.say("demo finished: every step passed")
    except DemoError as exc:
        demo.say(f"FAILED: {exc}")
        code = 1
    except KeyboardInterrupt:
        demo.say("interrupted")
        code = 130
    finally:
        demo.say(f"stopping {len(demo.procs)} daemon process groups")
        demo.stop_all()
        signal.signal(signal.SIGTERM, previous)
        if args.keep or code:
            demo.say(f"logs kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
