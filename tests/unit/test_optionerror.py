"""Every settings module's option error has the one shape of ``saltext_raft.optionerror``: the
option and the reason as attributes (callers re-raise them under another subject), and a
message that names what the option configures."""

import pytest

from saltext_raft.master.config import EngineConfigError
from saltext_raft.optionerror import OptionError
from saltext_raft.replicated.config import CacheConfigError
from saltext_raft.roots.config import RootsConfigError


@pytest.mark.parametrize(
    "cls,subject",
    [
        (EngineConfigError, "raft engine"),
        (CacheConfigError, "raft cache"),
        (RootsConfigError, "raft roots"),
    ],
)
def test_each_option_error_names_its_subject_option_and_reason(cls, subject):
    exc = cls("some_option", "must be a number (got 'x')")
    assert isinstance(exc, OptionError) and isinstance(exc, ValueError)
    assert str(exc) == f"{subject} option 'some_option': must be a number (got 'x')"
    assert (exc.option, exc.why) == ("some_option", "must be a number (got 'x')")
