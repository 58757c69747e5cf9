"""What several commands share: SIGTERM handled like Ctrl-C."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the job, `kill`) ends a run like Ctrl-C: the message says
    how to pick it up again, and a checkpoint or PNG being written is cleaned up."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
