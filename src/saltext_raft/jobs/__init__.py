"""The replicated job cache (``master_job_cache: raft``): Salt's job cache contract over the
replicated cache, so a job published on one master and returned through others is complete on
every master.

Lives here: :mod:`.layout` (where a job's parts live in the replicated cache, and which job ids
and minion ids are accepted) and :mod:`.store` (the contract functions Salt's master calls, with
the master opts passed in). Must not live here: the loader module (``returners/raft.py``), the
engine side (the cache service applies the writes), Raft rules. docs/jobs.md describes it.
"""
