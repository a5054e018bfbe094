"""`--redo`'s deletes, deferred to the first write of the new results.

The redone stages' rows stay in the database until a session writes again: the deletes run in that
session's transaction, before its first statement that touches one of the tables, so they commit with
the first new result or not at all. A run that fails, is refused or is killed before then leaves the
old results exactly as they were. Until then every session that touches one of the tables sees them
deleted already (so a stage counts every feature as left): the deletes run in it, and are rolled back
at its end when it wrote nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Table, delete, event
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import visitors


@dataclass
class DeferredDeletes:
    tables: Sequence[Table]
    """In delete order (the latest stage's first, so no row points at a deleted one)."""
    names: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = {table.name for table in self.tables}

    def watch(self, session: Session) -> Watch:
        return Watch(self, session)


class Watch:
    """One session under deferred deletes: runs them before its first statement that touches a deleted
    table, and tells whether the session wrote anything (commit) or only read (roll back)."""

    def __init__(self, deferred: DeferredDeletes, session: Session) -> None:
        self.deferred, self.session = deferred, session
        self.applied = self.wrote = False
        event.listen(session, "do_orm_execute", self._on_execute)
        event.listen(session, "before_flush", self._on_flush)

    def close(self) -> None:
        event.remove(self.session, "do_orm_execute", self._on_execute)
        event.remove(self.session, "before_flush", self._on_flush)

    def apply(self) -> None:
        if not self.applied:
            self.applied = True
            connection = self.session.connection()
            for table in self.deferred.tables:
                connection.execute(delete(table))

    def _on_execute(self, state: ORMExecuteState) -> None:
        touched = {node.name for node in visitors.iterate(state.statement) if isinstance(node, Table)}
        if touched & self.deferred.names:
            self.apply()
        if not state.is_select:
            self.wrote = True

    def _on_flush(self, session: Session, _context, _instances) -> None:
        changed = [*session.new, *session.dirty, *session.deleted]
        if not changed:
            return
        if {obj.__table__.name for obj in changed} & self.deferred.names:
            self.apply()
        self.wrote = True
