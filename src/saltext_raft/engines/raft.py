"""Salt engine ``raft``: run a saltext-raft node inside this Salt master.

A thin loader module: options are parsed and validated by
:mod:`saltext_raft.master.config`, the node runs in :mod:`saltext_raft.master.service`,
and the request gate lives in :mod:`saltext_raft.master.gate`.

.. code-block:: yaml

    engines:
      - raft:
          peers:                      # the founding voters (first start only)
            m1: 10.0.0.1:4606
            m2: 10.0.0.2:4606
            m3: 10.0.0.3:4606
          secret_file: /etc/salt/raft.secret

Every option, its default and an example: docs/configuration.md. When the engine module is
loaded in the master's parent process (before the request workers fork), it installs the
request gate on ``salt.master.MWorker`` (and, with ``keys: replicate`` on Salt 3007, the
``_auth`` wrapper: ``replicated/keyauth.py``).
"""

import logging
import sys

from saltext_raft.master import gate as _gate
from saltext_raft.master.bootepoch import EpochFileError
from saltext_raft.master.config import EngineConfigError
from saltext_raft.master.config import from_opts
from saltext_raft.master.fileutil import LockHeld
from saltext_raft.master.fileutil import UnsafeDirectory
from saltext_raft.replicated import keyauth as _keyauth

log = logging.getLogger(__name__)

__virtualname__ = "raft"


def __virtual__():
    if __opts__.get("__role") == "master":  # pylint: disable=undefined-variable
        # The master parent imports configured engines before it forks the request workers:
        # wrapping the class here makes every worker inherit the gate. If that fails the
        # master stops (GateNotInstalled) instead of serving ungated: fail closed.
        _gate.install_for_master(__opts__)  # pylint: disable=undefined-variable
        # Salt 3007 with ``keys: replicate``: _auth confirms a missing key with the cluster.
        _keyauth.install_for_master(__opts__)  # pylint: disable=undefined-variable
    return __virtualname__


def start(**options):
    """Run the Raft node until the master stops. Never returns normally."""
    from saltext_raft.master.service import RaftService  # pylint: disable=import-outside-toplevel

    opts = __opts__  # pylint: disable=undefined-variable
    try:
        cfg = from_opts(opts, options)
    except EngineConfigError as exc:
        log.error("saltext-raft: not starting: %s", exc)
        # Exit non-zero; the master's process manager restarts us and the error repeats in the
        # log until the configuration is fixed. The gate stays closed meanwhile (fail closed).
        sys.exit(2)
    try:
        RaftService(opts, cfg).run()
    except (UnsafeDirectory, EpochFileError) as exc:
        log.error("saltext-raft: not starting: %s", exc)
        sys.exit(2)
    except LockHeld as exc:
        log.error(
            "saltext-raft: not starting: process %s holds %s, so a raft engine is already "
            "running on this master's Raft storage, or the offline recovery command "
            "(python -m saltext_raft recover) is. Two writers would corrupt it.",
            exc.pid or "(unknown)",
            exc.path,
        )
        sys.exit(2)
