"""Prefork children die with their worker: a killed worker's tasks are rescued, so none may run on as an orphan.

When the worker's main process is killed (kill -9, OOM killer), PostgreSQL closes its broker session and
another worker runs its claimed tasks again within seconds (common.broker.sql.RESCUE). A pool child
still running one of those tasks would then run it twice. Each child therefore asks Linux for SIGKILL
when its parent goes (prctl PR_SET_PDEATHSIG).

Linux sends that signal when the *thread* that forked the child ends, not the process. Billiard forks
replacement children from its supervisor thread, which ends at a warm shutdown while those children
still finish their tasks; such children watch their parent from a thread instead (a 0.2 s poll).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any

from celery.signals import worker_process_init

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCH_INTERVAL = 0.2  # seconds between parent checks in a child forked by a short-lived thread

# Set in the parent just before each fork, so the child knows which process and thread forked it.
_forked_by_main_thread = True
_forking_pid = os.getpid()


def _before_fork() -> None:
    global _forked_by_main_thread, _forking_pid
    _forked_by_main_thread = threading.current_thread() is threading.main_thread()
    _forking_pid = os.getpid()


os.register_at_fork(before=_before_fork)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send `sig` to this process when the thread that forked it ends; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(*, parent: int) -> None:
    """Make sure this process is killed when process `parent` (its worker) ends, however it ends."""
    if not (_forked_by_main_thread and set_parent_death_signal()):
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


@worker_process_init.connect
def tie_child_to_worker(**kwargs: Any) -> None:
    """In each new prefork child: die with the worker's main process."""
    if _forking_pid == os.getpid():
        return  # not a forked child: the solo pool sends this signal in the worker itself
    die_with_parent(parent=_forking_pid)
