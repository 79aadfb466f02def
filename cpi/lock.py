"""One writer per results folder.

:class:`FolderLock` holds an exclusive ``flock`` on ``<folder>/.cpi.lock`` for
the duration of a command that writes into ``folder`` (``cpi evaluate``,
``cpi probe``, ``cpi probe-intervene``, ``cpi finetune``, ``cpi data score-context``, ``cpi run``,
``cpi organism sweep``). The
file records the holder's PID, host and command. A second writer gets a
:class:`cpi.errors.LockedError` naming that PID. The kernel drops the lock when
its process dies, so a lock left by a killed process (its file still there,
naming a dead PID) is simply taken over; the new holder rewrites the file.

A folder that did not exist is created by the lock; if the command fails
before writing anything, releasing the lock removes the empty folder again, so
a failed command leaves no trace. Locks are re-entrant within one process
(``cpi run`` locks its run folder while the finetuning, evaluation and probe
stages lock their sub-folders).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from cpi.errors import CpiError, LockedError

LOCK_NAME = ".cpi.lock"
_HELD: dict[str, "FolderLock"] = {}


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


class FolderLock:
    """Context manager: ``with FolderLock(out, "cpi evaluate"): ...`` (see the module docstring)."""

    def __init__(self, folder: str | Path, command: str = "") -> None:
        self.folder = Path(folder)
        self.command = command or " ".join(["cpi", *sys.argv[1:3]])
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []
        self._depth = 0
        self._outer: FolderLock | None = None

    # -- acquire / release -------------------------------------------------
    def acquire(self) -> "FolderLock":
        key = str(self.folder.resolve())
        held = _HELD.get(key)
        if held is not None:  # re-entrant within this process
            held._depth += 1
            self._outer = held
            return self
        self._make_folder()
        try:
            self._take()
        except BaseException:
            self._remove_created()
            raise
        self._depth = 1
        _HELD[key] = self
        return self

    def _make_folder(self) -> None:
        missing = []
        p = self.folder.absolute()
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CpiError(f"{self.folder}: cannot create the results folder ({exc.strerror})") from exc
        self._created = missing  # deepest first

    def _take(self) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CpiError(f"{self.folder}: cannot write into the results folder ({exc.strerror})") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                info = _holder(self.path)
                raise LockedError(
                    f"{self.folder}: in use by another process (PID {info.get('pid', '?')}, "
                    f"{info.get('command', 'a cpi command')}, since {info.get('since', '?')}); wait for it to "
                    "finish or stop it, or use another output folder") from None
            # the file we locked may have been unlinked by a holder that just released it
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = _holder(self.path)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self._fd = fd
            if stale.get("pid") and stale.get("pid") != os.getpid():
                import logging

                logging.getLogger(__name__).warning(
                    "%s: took over a lock left by PID %s (no longer running)", self.folder, stale["pid"])
            return
        raise CpiError(f"{self.folder}: could not take the folder lock (it kept changing)")  # pragma: no cover

    def release(self) -> None:
        if self._outer is not None:
            self._outer._depth -= 1
            self._outer = None
            return
        if self._fd is None:
            return
        _HELD.pop(str(self.folder.resolve()), None)
        try:
            self.path.unlink(missing_ok=True)  # unlink while still holding: a waiter re-checks the inode
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        """Remove folders this lock created if they are still empty (the command wrote nothing)."""
        for p in self._created:
            try:
                p.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def folder_lock(folder: str | Path, command: str = "") -> FolderLock:
    """``FolderLock(folder, command)``: ``with folder_lock(out, "cpi probe"): ...``."""
    return FolderLock(folder, command)
