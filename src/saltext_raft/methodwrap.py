"""Wrapping a method of a Salt class at class level, so that processes forked later inherit it.

Lives here: :func:`is_wrapped`, :func:`wrap` and :func:`unwrap` — the mark that says a method is
ours, the reference to the original kept on the wrapper, and putting the original back. Used by
the request gate (``master/gate.py``: ``MWorker._handle_payload``) and the key-auth wrapper
(``replicated/keyauth.py``: ``ReqServerChannel._auth``). Must not live here: what a wrapper
does, when it is installed (each caller's ``install_for_master``).
"""

from __future__ import annotations

from collections.abc import Callable

ORIGINAL = "__wrapped_original__"


def current(cls, name: str) -> Callable:
    """The method ``name`` as ``cls`` serves it (its own, or inherited)."""
    return cls.__dict__.get(name) or getattr(cls, name)


def is_wrapped(cls, name: str, mark: str) -> bool:
    return bool(getattr(current(cls, name), mark, False))


def wrap(cls, name: str, wrapper: Callable, original: Callable, mark: str) -> None:
    """Make ``wrapper`` (which calls ``original``) ``cls.<name>``, marked with ``mark``."""
    setattr(wrapper, mark, True)
    setattr(wrapper, ORIGINAL, original)
    setattr(cls, name, wrapper)


def unwrap(cls, name: str, mark: str) -> bool:
    """Put the original back if ``cls`` holds a wrapper marked ``mark``; False if it does not."""
    wrapper = cls.__dict__.get(name)
    if wrapper is None or not getattr(wrapper, mark, False):
        return False
    setattr(cls, name, getattr(wrapper, ORIGINAL))
    return True
