"""Salt returner ``raft``: the master job cache, replicated across masters by the ``raft``
engine.

.. code-block:: yaml

    # on every master of the cluster
    master_job_cache: raft
    engines:
      - raft:
          peers: {m1: 10.0.0.1:4606, m2: 10.0.0.2:4606, m3: 10.0.0.3:4606}
          secret_file: /etc/salt/raft.secret

A job published on one master and returned through any other is complete in
``salt-run jobs.lookup_jid`` and ``jobs.list_jobs`` on every master; reads come from this
master's own copy. Options, what is replicated and the limits: docs/jobs.md. The code is in
:mod:`saltext_raft.jobs.store`; this module only adapts it to the loader. It is a master job
cache, not a minion-side returner: it needs the master's ``raft`` engine.
"""

from saltext_raft.jobs import store as _store

__virtualname__ = "raft"


def _opts() -> dict:
    return __opts__  # pylint: disable=undefined-variable  (injected by the loader)


def __virtual__():
    if _opts().get("__role") not in (None, "master"):
        return False, "the raft returner is a master job cache (master_job_cache: raft)"
    return __virtualname__


def prep_jid(nocache=False, passed_jid=None, recurse_count=0):  # pylint: disable=unused-argument
    return _store.prep_jid(_opts(), nocache=nocache, passed_jid=passed_jid)


def returner(load):
    return _store.returner(_opts(), load)


def save_load(jid, clear_load, minions=None, recurse_count=0):  # pylint: disable=unused-argument
    return _store.save_load(_opts(), jid, clear_load, minions=minions)


def save_minions(jid, minions, syndic_id=None):
    return _store.save_minions(_opts(), jid, minions, syndic_id=syndic_id)


def get_load(jid):
    return _store.get_load(_opts(), jid)


def get_jid(jid):
    return _store.get_jid(_opts(), jid)


def get_fun(fun):
    return _store.get_fun(_opts(), fun)


def get_jids():
    return _store.get_jids(_opts())


def get_jids_filter(count, filter_find_job=True):
    return _store.get_jids_filter(_opts(), count, filter_find_job=filter_find_job)


def update_endtime(jid, time):
    return _store.update_endtime(_opts(), jid, time)


def get_endtime(jid):
    return _store.get_endtime(_opts(), jid)


def clean_old_jobs():
    _store.clean_old_jobs(_opts())


def save_reg(data):
    return _store.save_reg(_opts(), data)


def load_reg():
    return _store.load_reg(_opts())
