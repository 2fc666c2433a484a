"""Replicated ``file_roots`` / ``pillar_roots`` (opt-in, ``raft_roots``): the trees of one master
copied through the Raft log to every master, so a minion served by any master gets the same file.

Lives here: everything of the roots store that is not a Salt loader module. Must not live here:
the replicated cache it rides on (``replicated/``), Raft rules, the runner (``runners/raft.py``
``sync_roots``, a thin adapter over :mod:`.sync`). docs/roots.md describes it.

Map (who uses each module):

===========  ===================================================================================
``layout``   where the roots live in the replicated cache, the chunk size, the file size cap,
             and the checks of every name that becomes a path (used by all of the below)
``config``   the ``raft_roots*`` master options, validated; which directory each environment
             is (the engine, the runner)
``scan``     reading a source tree without following symlinks (:mod:`.sync`)
``sync``     one ``salt-run raft.sync_roots``: scan, diff, send chunks, commit the manifest,
             remove unreferenced content (the runner; the engine's periodic scan)
``apply``    writing the replicated trees into this master's roots, safely and atomically,
             without losing local edits (:mod:`.service`)
``service``  the engine side: applies each committed manifest, rechecks, scans on a source
             master (``master/service.py`` starts it)
===========  ===================================================================================
"""
