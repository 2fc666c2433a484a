"""A minion as an attacker: sends crafted ``_return`` loads to its master through its own
authenticated request channel, as a modified minion could. Run as a child process:
``python -m tests.scenarios.minion_sender <minion config file> <json list of loads>``;
prints one JSON line per load with the master's answer (or the error). A load with
``return_size`` gets a return of that many bytes (too big for a command line)."""

from __future__ import annotations

import json
import sys

import salt.channel.client
import salt.config
import salt.minion


def main() -> int:
    opts = salt.config.minion_config(sys.argv[1])
    opts.update(salt.minion.resolve_dns(opts))
    loads = json.loads(sys.argv[2])
    with salt.channel.client.ReqChannel.factory(opts, crypt="aes") as channel:
        for load in loads:
            if "return_size" in load:
                load = dict(load, **{"return": "x" * load.pop("return_size")})
            try:
                answer = channel.send(dict(load, cmd="_return", id=opts["id"]), tries=1, timeout=60)
                print(json.dumps({"ok": True, "answer": repr(answer)[:200]}), flush=True)
            except Exception as exc:  # pylint: disable=broad-except
                print(json.dumps({"ok": False, "error": repr(exc)[:300]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
