"""Reusable test helpers (fault-injecting servers, ...)."""

import signal


def sigint_default() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT (what Ctrl-C sends).

    A shell's background job (``cmd &`` without job control, ``nohup``) starts with SIGINT ignored,
    a disposition every child inherits and Python then keeps, so the child would never see the
    signal: the test would measure how the shell started pytest, not how sagegen handles Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
