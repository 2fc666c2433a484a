"""Benchmarks: ``python -m saltext_raft bench <command>`` (see ``__main__.py`` for the table).

Benchmarks print figures (JSON with ``--json``); tests never assert on timings.
"""
