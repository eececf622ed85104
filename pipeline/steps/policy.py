"""Who may name a function to import in a chain: the person running the command, not the file.

A chain step written ``package.module:function`` imports any installed module
and calls any function in it with arguments the file chooses (``numpy:save``
was called that way from a job file).  Config and job files are data, often
written by someone else, so such a step is refused unless the *invocation*
allows it: ``--allow-user-steps`` on the command line (an :func:`allow_user_steps`
block around the config resolution) or ``ZSSR_ALLOW_USER_STEPS=1`` in the
process environment (for ``zssr batch`` and scheduled jobs).  A key inside
the same file would be written by the same hand it is meant to stop.
Entry points in the ``zssr.steps`` group are installed packages: installing
is the user's act, so they need no opt-in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["ALLOW_USER_STEPS_ENV", "allow_user_steps", "user_steps_allowed"]

ALLOW_USER_STEPS_ENV = "ZSSR_ALLOW_USER_STEPS"
_ALLOW_USER_STEPS: ContextVar[bool | None] = ContextVar("allow_user_steps", default=None)


@contextmanager
def allow_user_steps(allowed: bool = True) -> Iterator[None]:
    """Within the block, dotted-path user steps are (not) allowed, whatever the environment.

    The CLI's ``--allow-user-steps`` opens this around the config resolution.
    """
    token = _ALLOW_USER_STEPS.set(bool(allowed))
    try:
        yield
    finally:
        _ALLOW_USER_STEPS.reset(token)


def user_steps_allowed() -> bool:
    """Whether a config may name ``package.module:function``: the innermost
    :func:`allow_user_steps` block decides, else ``ZSSR_ALLOW_USER_STEPS=1`` in the
    environment of the process (the opt-in for ``zssr batch`` and scheduled jobs)."""
    allowed = _ALLOW_USER_STEPS.get()
    if allowed is not None:
        return allowed
    return os.environ.get(ALLOW_USER_STEPS_ENV, "").strip() == "1"
