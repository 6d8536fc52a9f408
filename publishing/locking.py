"""The publish area `<base>/.<model>.publish/` (lock, staging), which copiers of `<model>/` never see, and its lock:
a kernel record lock locally; on object stores a lease, checked before placing (why: docs/export.md)."""
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
from typing import Self

import tensorflow as tf

from model_api.versions import STAGING_PREFIX, join
from publishing import storage

AREA_SUFFIX = ".publish"
LOCK_FILE = "lock"
DEFAULT_TIMEOUT_SECONDS = 3600.0
# Lease on object stores: renewed every third of it, retried every RETRY_SECONDS after a failed
# renewal; counted lost once less than a quarter remains (room for one file copy and clock skew).
LEASE_SECONDS = 120.0
RETRY_SECONDS = 2.0
SETTLE_SECONDS = 0.5


class LockError(RuntimeError):
    """The publish lock cannot be taken or was lost; the message says why, in one line."""


class LockLost(LockError):
    """Our lease expired unrenewed or was taken over: nothing more may be placed or pruned."""


def publish_area(model_dir: str) -> str:
    """`<base>/.<model>.publish`: a sibling of the model directory, so on the same filesystem
    (rename into `<model>/` stays atomic) yet invisible to anything that copies `<model>/`."""
    model_dir = model_dir.rstrip("/")
    return join(os.path.dirname(model_dir), f".{os.path.basename(model_dir)}{AREA_SUFFIX}")


@dataclass(frozen=True)
class Owner:
    """Who is publishing: a host, a process and a token for this one publish."""
    host: str
    pid: int
    token: str

    @classmethod
    def new(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(4))

    def staging_name(self, purpose: str = "") -> str:
        """`.staging-<pid>-<token>[-<purpose>]@<host>`: never an integer, so never a version."""
        return f"{STAGING_PREFIX}{self.pid}-{self.token}{'-' + purpose if purpose else ''}@{self.host}"


_GUARD = threading.Lock()
_LIVE_TOKENS: set[str] = set()  # publishes running in this process
_PROCESS_LOCKS: dict[str, threading.Lock] = {}  # one per publish area: record locks are per process


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
    head = name[len(STAGING_PREFIX):].split("@", 1)[0]
    return head.split("-", 2)[2] if owner_of(name) and head.count("-") >= 2 else ""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


def is_abandoned(name: str, me: Owner) -> bool:
    """Whether `me`, holding the lock, may remove a staging folder: staging exists only while its owner holds
    the lock, but a live process of this host may be an exporter that takes none (docs/export.md)."""
    owner = owner_of(name)
    if owner is None or owner.host != me.host:
        return True
    if owner.pid == me.pid:
        with _GUARD:
            return owner.token not in _LIVE_TOKENS
    return not _process_alive(owner.pid)


def _process_lock(area: str) -> threading.Lock:
    key = os.path.realpath(area) if storage.is_local(area) else area.rstrip("/")
    with _GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.Lock())


@contextlib.contextmanager
def publish_lock(model_dir: str, owner: Owner, timeout: float = DEFAULT_TIMEOUT_SECONDS, say=print):
    """Hold the model's exclusive publish lock (waiting at most `timeout` s); yields the Lease on object
    stores, to check before placing and pruning, and None locally (a kernel lock is never lost while we live)."""
    deadline = time.monotonic() + timeout
    area = publish_area(model_dir)
    thread_lock = _process_lock(area)  # record locks are per process: serialize our threads too
    if not thread_lock.acquire(timeout=max(timeout, 0)):
        raise LockError(f"another export in this process held the publish lock on {model_dir} "
                          f"for more than {timeout:g}s")
    with _GUARD:
        _LIVE_TOKENS.add(owner.token)
    try:
        holder = _file_lock if storage.is_local(model_dir) else _lease_lock
        with holder(join(area, LOCK_FILE), owner, deadline, say) as held:
            yield held
    finally:
        with _GUARD:
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


def _waiter(lock: str, deadline: float, say):
    """wait(holder, pause) after each failed try: says once who holds `lock`; LockError past the deadline."""
    told = []

    def wait(holder: str, pause: float) -> None:
        if not told:
            say(f"[export] waiting for {lock}, held by {holder}")
            told.append(holder)
        if time.monotonic() > deadline:
            raise LockError(f"{lock} was still held when the wait ended")
        time.sleep(pause)
    return wait


@contextlib.contextmanager
def _file_lock(path: str, owner: Owner, deadline: float, say):
    """fcntl.lockf: Linux's NFS client forwards it to the server, and the kernel releases it
    when the process dies, so a killed exporter never blocks the next one."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # e.g. created by another user: every exporter of the model must be able to write it
        raise LockError(f"cannot open the publish lock {path}: {err.strerror}") from None
    try:
        wait = _waiter(f"the publish lock {path}", deadline, say)
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):  # only these mean "held by another process"
                    raise LockError(_lock_failure(path, err)) from None
            wait(_describe_holder(os.pread(fd, 4096, 0).decode(errors="replace")), 0.2)
        # The file is never deleted: a waiter may hold it open, and a new inode would let two in.
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_record(owner).encode(), 0)
        try:
            yield None
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
        return storage.read_json(path)
    except (tf.errors.NotFoundError, ValueError):
        return None


def _reason(err: tf.errors.OpError) -> str:
    return f"{type(err).__name__}: {err.message}"


class Lease:
    """A lease object on a store without atomic create: renewed in the background, each renewal
    reading back our token first; a renewal that keeps failing or finds another owner marks it lost."""

    def __init__(self, path: str, owner: Owner):
        self.path, self.owner, self.lease = path, owner, LEASE_SECONDS
        self.retry = min(RETRY_SECONDS, self.lease / 10)
        self.valid_until = 0.0  # monotonic; the lease we last wrote runs out then
        self.lost = ""
        self.failure = ""  # the last renewal's error, "" once one succeeds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_until_stopped, name="publish-lease", daemon=True)

    def write(self) -> None:
        started = time.monotonic()  # counted from before the write: never later than other hosts count
        storage.write_text(self.path, _owner_record(self.owner, expires=time.time() + self.lease))
        self.valid_until = started + self.lease

    def ours(self) -> bool:
        """Reads the lease back; a record naming another owner (or none) marks it lost."""
        record = _read_lease(self.path)
        if (record or {}).get("token") == self.owner.token:
            return True
        self.lost = f"the publish lease {self.path} was taken over by {_describe_holder(json.dumps(record))}"
        return False

    def alive(self) -> bool:
        return not self.lost and time.monotonic() < self.valid_until - self.lease / 4

    def check(self) -> None:
        """Raise LockLost unless we still own the lease; called before placing and pruning."""
        try:
            if self.alive() and self.ours():
                return
        except tf.errors.OpError as err:
            raise LockLost(f"cannot confirm the publish lease {self.path}: {_reason(err)}") from None
        raise LockLost(self.lost or self._expired())

    def _expired(self) -> str:
        return f"the publish lease {self.path} " + (f"could not be renewed: {self.failure}" if self.failure
                                                     else "was not renewed in time")

    def _renew_until_stopped(self) -> None:
        delay = self.lease / 3
        while not self._stop.wait(delay):
            if not self.alive():  # woken too late: another exporter may own it by now, never overwrite
                self.lost = self.lost or self._expired()
                return
            try:
                if not self.ours():
                    return
                self.write()
                self.failure, delay = "", self.lease / 3
            except tf.errors.OpError as err:  # transient storage trouble: retry while the lease lasts
                self.failure, delay = _reason(err), self.retry

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(tf.errors.OpError):  # left behind, it simply expires
            if not self.lost and self.ours():
                tf.io.gfile.remove(self.path)


@contextlib.contextmanager
def _lease_lock(path: str, owner: Owner, deadline: float, say):
    """Written when absent or expired, read back after a settle delay: this narrows the race
    between two exporters starting in the same instant but cannot close it (no atomic create)."""
    held = Lease(path, owner)
    try:
        _take(held, deadline, say, SETTLE_SECONDS)
    except tf.errors.OpError as err:  # one line now, not an hour's wait on a store that refuses us
        raise LockError(f"cannot take the publish lease {path}: {_reason(err)}") from None
    with held:
        yield held


def _take(held: Lease, deadline: float, say, settle: float) -> None:
    wait = _waiter(f"the publish lease {held.path}", deadline, say)
    while True:
        record = _read_lease(held.path)
        if record is None or record.get("token") == held.owner.token or record.get("expires", 0) < time.time():
            held.write()
            time.sleep(settle)  # a writer that raced us has landed by now: whoever reads back its own token wins
            if held.ours():
                held.lost = ""  # a read-back lost in an earlier round of this wait
                return
        wait(_describe_holder(json.dumps(record)), settle)
