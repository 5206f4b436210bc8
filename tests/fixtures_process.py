"""Child processes that a test stops with Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal


def ctrl_c_reaches_the_child() -> None:
    """``preexec_fn`` for a child the test stops with SIGINT.

    Why: a shell without job control starts background commands with SIGINT
    ignored, and an ignored signal is inherited, so ``bash .ci/run &`` would
    hand every child an ignored Ctrl-C and Python would never raise
    KeyboardInterrupt. Resetting it to the default lets Python install its
    own handler, as it does under a terminal or a foreground CI step.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
