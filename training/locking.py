"""One publisher per model directory at a time, and staging folders that name their owner.

The lock is `<model_dir>/.publish.lock` (TF Serving ignores the non-integer name):

* local folders, including shared volumes (NFS, PVCs): a POSIX record lock (fcntl.lockf,
  which Linux's NFS client forwards to the server), released by the kernel when the
  process dies, so a killed exporter never blocks the next one;
* other tf.io.gfile schemes (gs://, s3://, ram://): tf.io.gfile has no atomic create or
  lock, so the lock is a lease object: written when absent or expired, read back after a
  settle delay, renewed while held. That narrows the race between two exporters starting
  in the same instant but cannot close it; see the README for what that means on buckets.

Threads of one process are serialized as well (record locks are per process).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import tensorflow as tf

from model_api.versions import STAGING_PREFIX, join
from training import storage

LOCK_FILE = ".publish.lock"
DEFAULT_TIMEOUT_SECONDS = 3600.0
LEASE_SECONDS = 120.0
SETTLE_SECONDS = 0.5


class LockError(RuntimeError):
    """The publish lock cannot be taken; the message says why, in one line."""


class LockTimeout(LockError):
    """Another exporter held the model's publish lock for longer than we were willing to wait."""


@dataclass(frozen=True)
class Owner:
    """Who is publishing: a host, a process and a token for this one publish."""
    host: str
    pid: int
    token: str

    @classmethod
    def new(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(4))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def staging_name(self, purpose: str = "") -> str:
        """`.staging-<pid>-<token>[-<purpose>]@<host>`: not an integer, so TF Serving ignores it."""
        return f"{STAGING_PREFIX}{self.pid}-{self.token}{'-' + purpose if purpose else ''}@{self.host}"


_LIVE_TOKENS: set[str] = set()  # publishes running in this process
_LIVE_GUARD = threading.Lock()


def owner_of(name: str) -> Owner | None:
    """The owner a staging folder's name records; None for other names (older exports)."""
    if not name.startswith(STAGING_PREFIX) or "@" not in name:
        return None
    head, host = name[len(STAGING_PREFIX):].split("@", 1)
    pid, _, token = head.partition("-")
    if not pid.isdigit() or not token:
        return None
    return Owner(host, int(pid), token.split("-", 1)[0])


def purpose_of(name: str) -> str:
    """The purpose a staging name records after its token (`placing-3`), '' for none."""
    if owner_of(name) is None:
        return ""
    head = name[len(STAGING_PREFIX):].split("@", 1)[0]
    return head.split("-", 2)[2] if head.count("-") >= 2 else ""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_abandoned(name: str, me: Owner) -> bool:
    """Whether a staging folder may be removed by `me`, who holds the model's publish lock.

    Staging folders exist only while their owner holds the lock, so one owned by another
    host, or by a process of this host that is gone, or by a finished publish of this
    process, is abandoned. One owned by a live process of this host is kept: it may be an
    exporter that does not take the lock, and deleting its work is the bug this prevents.
    """
    owner = owner_of(name)
    if owner is None or owner.host != me.host:
        return True
    if owner.pid == me.pid:
        with _LIVE_GUARD:
            return owner.token not in _LIVE_TOKENS
    return not _process_alive(owner.pid)


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(model_dir: str) -> threading.Lock:
    key = os.path.realpath(model_dir) if storage.is_local(model_dir) else model_dir.rstrip("/")
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.Lock())


@contextlib.contextmanager
def publish_lock(model_dir: str, owner: Owner, timeout: float = DEFAULT_TIMEOUT_SECONDS, say=print):
    """Hold the model directory's exclusive publish lock; wait for it at most `timeout` s."""
    deadline = time.monotonic() + timeout
    thread_lock = _process_lock(model_dir)
    if not thread_lock.acquire(timeout=max(timeout, 0)):
        raise LockTimeout(f"another export in this process held the publish lock on {model_dir} "
                          f"for more than {timeout:g}s")
    with _LIVE_GUARD:
        _LIVE_TOKENS.add(owner.token)
    try:
        holder = _file_lock if storage.is_local(model_dir) else _lease_lock
        with holder(join(model_dir, LOCK_FILE), owner, deadline, say):
            yield
    finally:
        with _LIVE_GUARD:
            _LIVE_TOKENS.discard(owner.token)
        thread_lock.release()


def _owner_record(owner: Owner, **extra) -> str:
    return json.dumps({"host": owner.host, "pid": owner.pid, "token": owner.token, "since": time.time(), **extra})


def _describe_holder(text: str) -> str:
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on {record['host']}"
    except (ValueError, KeyError, TypeError):
        return "another exporter"


@contextlib.contextmanager
def _file_lock(path: str, owner: Owner, deadline: float, say):
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # e.g. created by another user: every exporter of the model must be able to write it
        raise LockError(f"cannot open the publish lock {path}: {err.strerror}") from None
    try:
        told = False
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):  # only these mean "held by another process"
                    raise LockError(_lock_failure(path, err)) from None
                if not told:
                    say(f"[export] waiting for the publish lock {path}, held by "
                        f"{_describe_holder(os.pread(fd, 4096, 0).decode(errors='replace'))}")
                    told = True
                if time.monotonic() > deadline:
                    raise LockTimeout(f"the publish lock {path} was still held when the wait ended") from None
                time.sleep(0.2)
        # The file is never deleted: a waiter may hold it open, and a new inode would let two in.
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_record(owner).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_failure(path: str, err: OSError) -> str:
    """One line for a lock that no wait will get (waiting an hour would only hide it)."""
    name = errno.errorcode.get(err.errno, str(err.errno))
    hint = "; on NFS the server's lock manager (lockd/statd) must run" if err.errno == errno.ENOLCK else ""
    return f"cannot lock the publish lock {path}: {err.strerror} ({name}){hint}"


def _read_lease(path: str) -> dict | None:
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return json.loads(f.read())
    except (tf.errors.NotFoundError, ValueError):
        return None


@contextlib.contextmanager
def _lease_lock(path: str, owner: Owner, deadline: float, say, lease: float = LEASE_SECONDS,
                settle: float = SETTLE_SECONDS):
    told = False
    while True:
        held = _read_lease(path)
        if held is None or held.get("token") == owner.token or held.get("expires", 0) < time.time():
            storage.write_text(path, _owner_record(owner, expires=time.time() + lease))
            time.sleep(settle)  # a writer that raced us has landed by now: whoever reads back its own token wins
            if (_read_lease(path) or {}).get("token") == owner.token:
                break
        elif not told:
            say(f"[export] waiting for the publish lease {path}, held by {_describe_holder(json.dumps(held))}")
            told = True
        if time.monotonic() > deadline:
            raise LockTimeout(f"the publish lease {path} was still held when the wait ended")
        time.sleep(settle)
    stop = threading.Event()

    def renew():
        while not stop.wait(lease / 3):
            storage.write_text(path, _owner_record(owner, expires=time.time() + lease))

    renewer = threading.Thread(target=renew, name="publish-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if (_read_lease(path) or {}).get("token") == owner.token:
            tf.io.gfile.remove(path)
