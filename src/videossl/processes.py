"""Child processes that never outlive the step that started them, and one run per output folder.

A step that launches a trainer (torchrun and its workers) must take them down with it: a killed
`videossl pretrain` whose worker lives on keeps writing `encoder.pt` while the rerun writes it too.
Three mechanisms, because no one of them covers every way a parent dies:
- the child gets its own process group, and SIGTERM/SIGINT/SIGHUP to the step are forwarded to it;
- Linux's PR_SET_PDEATHSIG: the kernel sends the child SIGTERM when its parent dies, even by SIGKILL
  (set in the launched process and again in each worker, whose parent is torchrun);
- a run lock (an exclusive flock) on the output folder: a second run into it fails at once.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LOCK_FILE = ".run.lock"


class Busy(RuntimeError):
    """Another run holds the folder's lock."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run_attached(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run `cmd` to completion in its own process group, tied to this process: our termination
    signals are passed on to its whole group, and it is terminated if we die. Returns its exit code."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=die_with_parent)

    def forward(signum, _frame):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # we are unwinding (an exception): never leave the group behind
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


@contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder`'s run lock (released by the kernel when the holder dies, however it dies). The lock
    file names its holder (process, host, start time, command), so a refused run says who has it."""
    import socket
    import sys
    import time

    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise Busy(f"another run is writing to {folder}: {holder} (its lock {path} is held); wait for it or "
                       f"stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {' '.join(sys.argv[:4])}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
