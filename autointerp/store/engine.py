"""Opening the database: SQLite by default (WAL, foreign keys on), any SQLAlchemy URL accepted,
with a schema version check so a database from another version is never misread."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import LargeBinary, Table, cast, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import (ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError,
                            SQLAlchemyError)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import visitors

from autointerp import jsontext, paths
from autointerp.errors import StoreError
from autointerp.resources import resource_dir
from autointerp.store.deferred import DeferredDeletes
from autointerp.store.lock import advisory_lock, file_lock
from autointerp.store.schema import SCHEMA_VERSION, Base, Json, SchemaInfo, Str, Txt, damaged, shown


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Per-connection settings; none of them writes to the file (WAL is switched on once the file is
    known to be ours, see Store._prepare)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


NOT_UTF8 = re.compile(r"Could not decode to UTF-8 column '(.*?)' with text '(.*)", re.S)
"""sqlite3's error for a text value whose bytes are not UTF-8, raised as the row is fetched (the text
shown with U+FFFD for the bad bytes, and cut short when long)."""


def _around_bad_byte(text: str) -> str:
    """The part of a text (decoded with U+FFFD for bad bytes) around its first bad byte, between control
    characters (a text the database built of several columns)."""
    text = next((part for part in re.split(r"[\x00-\x1f]", text) if "\ufffd" in part), text)
    bad = max(text.find("\ufffd"), 0)
    return text[max(0, bad - 16):bad + 16]


def _column_not_utf8(engine: Engine, table: str) -> tuple[str, str] | None:
    """(column, its text around the bad byte) of the first text or JSON column of `table` holding bytes
    that are not UTF-8, read anew as bytes; None if none does or it cannot be read. Only on the way to
    an error: for a text the database built of several columns (the atlas's row hashes)."""
    try:
        with engine.connect() as conn:
            for column in Base.metadata.tables[table].columns:
                if not isinstance(column.type, (Str, Txt, Json)):
                    continue
                query = select(cast(column, LargeBinary)).where(func.typeof(column).in_(("text", "blob")))
                for raw in conn.scalars(query):
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError:
                        return column.name, _around_bad_byte(raw.decode("utf-8", "replace"))
    except SQLAlchemyError:
        pass
    return None


def _not_utf8(context: ExceptionContext) -> BaseException | None:
    """A SQLite text value that is not UTF-8, met while fetching rows: DamagedDatabase naming the
    table.column and the text around the first bad byte, in place of sqlite3's error. The column is the
    one of that name of the tables the statement reads, or else found by reading their text columns."""
    match = NOT_UTF8.match(str(context.original_exception))
    if not isinstance(context.original_exception, sqlite3.OperationalError) or match is None:
        return None
    name, value = match.groups()
    value = _around_bad_byte(value.removesuffix("'"))
    compiled = context.execution_context.compiled if context.execution_context is not None else None
    statement = compiled.statement if compiled is not None else None
    tables = sorted({t.name for t in visitors.iterate(statement) if isinstance(t, Table)} & set(Base.metadata.tables)
                    if statement is not None else ())
    owners = [t for t in tables if name in Base.metadata.tables[t].c]
    if len(owners) == 1:
        return damaged(shown(value), f"{owners[0]}.{name}", "UTF-8 text")
    for table in tables:
        if found := _column_not_utf8(context.engine, table):
            return damaged(shown(found[1]), f"{table}.{found[0]}", "UTF-8 text")
    return damaged(shown(value), f"a text column of {', '.join(tables) or 'a table'}", "UTF-8 text",
                   tables[0] if len(tables) == 1 else "")


DRIVER_EXTRAS = {"postgresql": "postgres"}
"""The autointerp extra that installs a database's driver."""


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None: a server's database); a folder, a pipe or a device is refused."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    if path.is_dir():
        raise StoreError(f"--db {path} is a folder: name a database file, e.g. {path / 'autointerp.db'}")
    if paths.special(path):
        raise StoreError(f"--db {path} is a pipe, device or socket, not a file: name a database file")
    return path


def _create(url: str) -> Engine:
    """The engine for a URL, or one line saying what is wrong with it (bad URL, driver not installed)."""
    try:
        return create_engine(url, json_deserializer=jsontext.loads)  # (JSON columns nested too deep: a ValueError)
    except ArgumentError as exc:
        raise StoreError(f"--db {url!r} is not a database URL ({exc}): give a SQLite file path or a URL such as "
                         f"postgresql+psycopg://user@host/dbname") from None
    except (ImportError, NoSuchModuleError) as exc:
        backend = url.split(":", 1)[0].split("+", 1)[0]
        extra = DRIVER_EXTRAS.get(backend)
        how = f"pip install 'autointerp[{extra}]'" if extra else "install its driver"
        raise StoreError(f"no driver for the database URL's {url.split(':', 1)[0]!r} ({exc}): {how}") from None


CREATE_ATTEMPTS = 40
"""How often a first run retries creating the schema while other first runs create it too (one table
lost to another run per attempt at most, with a growing pause between)."""


class Store:
    """The run's database. Use `with store.session() as s:` for a unit of work that commits on exit."""

    def __init__(self, url: str, create: bool = True) -> None:
        """create=False: refuse a database that does not exist yet (commands that only read never create one)."""
        self.url = url
        path = sqlite_file(url)
        if path is not None:
            if not create and not path.is_file():
                raise StoreError(f"no database at {path}: nothing to show yet; run `autointerp mine` (or `run`) "
                                 f"first, or point --db at an existing database")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the database folder {path.parent} ({exc.strerror}): choose a writable --db or --out") from None
        self.engine: Engine = _create(url)
        self.name = self.engine.url.render_as_string(hide_password=True)
        """The URL as shown to users: the password masked."""
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "handle_error", _not_utf8)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._deferred: DeferredDeletes | None = None
        self._prepare(create)

    def _prepare(self, create: bool) -> None:
        try:
            tables = set(inspect(self.engine).get_table_names())
        except (DatabaseError, OperationalError) as exc:
            reason = " ".join(str(exc.orig).split())  # one line: drivers' messages span several
            if "disk i/o error" in reason.lower() or "full" in reason.lower():
                raise StoreError(f"no space left writing the database {self.name} ({reason}; is the disk full?): "
                                 f"free some space and run the same command again") from None
            fix = ("start the server, or check the host, port, user and password in --db"
                   if self.engine.dialect.name != "sqlite" else "point --db at an autointerp database or a new file")
            raise StoreError(f"cannot open database {self.name}: {reason}; {fix}") from None
        if not tables:
            if not create:
                raise StoreError(f"database {self.name} is empty: nothing to show yet; run `autointerp mine` (or `run`) first")
            self._wal()
            for attempt in range(CREATE_ATTEMPTS):  # first runs at once: each creates what the others have not yet
                try:
                    Base.metadata.create_all(self.engine)
                    break
                except OperationalError:  # another run created a table between the check and the CREATE
                    if attempt == CREATE_ATTEMPTS - 1:
                        raise
                    time.sleep(0.02 * (attempt + 1))
            try:
                with self.session() as s:
                    s.merge(SchemaInfo(key="schema_version", value=str(SCHEMA_VERSION)))
            except IntegrityError:
                pass  # the other first run recorded the version
            return
        if "schema_info" not in tables:
            raise StoreError(f"database {self.name} was not written by autointerp (no schema_info table): use a new --db path")
        for _ in range(30):  # a first run creating it right now finishes within moments
            with self.session() as s:
                row = s.get(SchemaInfo, "schema_version")
            if row is not None and not set(Base.metadata.tables) - set(inspect(self.engine).get_table_names()):
                break
            time.sleep(0.1)
        found = int(row.value) if row else -1
        if found != SCHEMA_VERSION:
            self._migrate(found)
        if missing := sorted(set(Base.metadata.tables) - set(inspect(self.engine).get_table_names())):
            raise StoreError(f"database {self.url} lacks the tables {', '.join(missing)} of its schema version: "
                             f"it was damaged; use a new --db path (or restore the file)")
        self._wal()

    def _wal(self) -> None:
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")

    def _migrate(self, found: int) -> None:
        """Apply db/migrations/NNN_to_MMM.sql step by step (NNN_to_MMM.postgresql.sql instead on PostgreSQL where
        the DDL differs), or refuse clearly."""
        migrations = resource_dir("db") / "migrations"
        version = found
        while version < SCHEMA_VERSION:
            stem = f"{version:03d}_to_{version + 1:03d}"
            step = migrations / f"{stem}.{self.engine.dialect.name}.sql"  # a backend's own DDL, if it needs one
            if not step.is_file():
                step = migrations / f"{stem}.sql"
            if not step.is_file():
                break
            with self.engine.begin() as conn:
                script = "\n".join(line for line in step.read_text().splitlines() if not line.lstrip().startswith("--"))
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(text(statement))
                conn.execute(text("UPDATE schema_info SET value = :v WHERE key = 'schema_version'"), {"v": str(version + 1)})
            version += 1
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"database {self.name} has schema version {found}, this autointerp (schema {SCHEMA_VERSION}) "
                f"cannot read it: use the autointerp version that wrote it, or a new --db path")

    @contextmanager
    def exclusive(self, command: str) -> Iterator[None]:
        """Hold the run lock for the duration of a stage run (see store/lock.py): a second run on the same
        database is refused at once with who holds it, and a dead run never leaves it stale. SQLite
        and PostgreSQL are locked; other databases are not."""
        if self.url.startswith("sqlite:///"):
            with file_lock(Path(self.url.removeprefix("sqlite:///")), command):
                yield
        elif self.engine.dialect.name == "postgresql":
            with advisory_lock(self.engine, self.name, command):
                yield
        else:
            yield

    def defer_deletes(self, tables: Iterable[type[Base]]) -> None:
        """`--redo`: delete these tables' rows with the first write of the new results, or not at all
        (autointerp.store.deferred); every session sees them deleted from now on."""
        names = {table.__tablename__ for table in tables} | (self._deferred.names if self._deferred else set())
        self._deferred = DeferredDeletes([t for t in reversed(Base.metadata.sorted_tables) if t.name in names])

    @contextmanager
    def session(self, settle: bool = False) -> Iterator[Session]:
        """A unit of work that commits on exit (rolls back on an exception). settle: it also commits the
        deferred deletes, written or not (a run that finished without a new result to write)."""
        deferred = self._deferred
        with self._sessions() as s:
            watch = deferred.watch(s) if deferred else None
            try:
                with s.begin() as transaction:
                    if watch is not None and settle:
                        watch.apply()
                        watch.wrote = True
                    yield s
                    if watch is not None:
                        s.flush()
                        if watch.applied and not watch.wrote:
                            transaction.rollback()  # it only read: the old rows stay until the first write
                            return
                if watch is not None and watch.applied and self._deferred is deferred:
                    self._deferred = None  # committed with this session's writes
            finally:
                if watch is not None:
                    watch.close()

    def schema_version(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(SchemaInfo.value).where(SchemaInfo.key == "schema_version")))

    def close(self) -> None:
        self.engine.dispose()
