"""The run lock: one autointerp run at a time per database. SQLite: an flock on DB.lock beside the file.
PostgreSQL: a session advisory lock (pg_advisory_lock) held by a connection of the run's own, which the
server releases when that connection ends, so also when the process dies (even on kill -9) or its
machine goes away. Either way a second run is refused at once, naming the first."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from autointerp import jsontext, paths
from autointerp.errors import StoreError

ADVISORY_KEY = (0x61757469, 1)
"""The two int4 keys of autointerp's advisory lock ("auti", 1); advisory locks are per database."""
HOLDER_PREFIX = "autointerp"
"""application_name of the connection holding the lock: "autointerp|pid|command|since" (under 64 bytes)."""


def _refusal(database: str, holder: dict) -> StoreError:
    who = f"pid {holder.get('pid', '?')}, `{holder.get('command', '?')}` since {holder.get('since', '?')}"
    return StoreError(f"database {database} is in use by another autointerp run ({who}): "
                      f"wait for it to finish, or use another --db")


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def file_lock(database: Path, command: str) -> Iterator[None]:
    """flock on DATABASE.lock, which also records who holds it (JSON: pid, command, since)."""
    lock = Path(f"{database}.lock")
    if paths.special(lock):
        raise StoreError(f"lock file {lock} is a pipe, device or socket, not a file: remove it (no run holds it)")
    handle = lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            holder = jsontext.loads(handle.read() or "{}")
        except ValueError:
            holder = {}
        handle.close()
        raise _refusal(str(database), holder) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": command, "since": _now()}))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextmanager
def advisory_lock(engine: Engine, database: str, command: str) -> Iterator[None]:
    """pg_try_advisory_lock on a dedicated connection kept open for the run; the holder is named by
    that connection's application_name, read back from pg_stat_activity by a refused run."""
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        name = "|".join((HOLDER_PREFIX, str(os.getpid()), command, _now()))[:63]
        conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})
        got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                           {"a": ADVISORY_KEY[0], "b": ADVISORY_KEY[1]}).scalar()
        if not got:
            holder = conn.execute(text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :b "
                "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
                {"a": ADVISORY_KEY[0], "b": ADVISORY_KEY[1]}).scalar() or ""
            parts = holder.split("|")
            found = dict(zip(("pid", "command", "since"), parts[1:])) if parts[0] == HOLDER_PREFIX else {}
            raise _refusal(database, found)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": ADVISORY_KEY[0], "b": ADVISORY_KEY[1]})
    finally:
        conn.close()
