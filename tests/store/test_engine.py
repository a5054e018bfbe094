import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from autointerp.errors import StoreError
from autointerp.resources import resource_dir
from autointerp.store.schema import SCHEMA_VERSION
from autointerp.store.engine import Store


def test_new_sqlite_database_uses_wal_and_foreign_keys(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert store.schema_version() == SCHEMA_VERSION
    store.close()


def test_database_from_another_version_is_refused(tmp_path):
    path = tmp_path / "a.db"
    Store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_info SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=rf"schema version 99, this autointerp \(schema {SCHEMA_VERSION}\) cannot read it"):
        Store(f"sqlite:///{path}")


def test_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE x (a)")
    with pytest.raises(StoreError, match="not written by autointerp"):
        Store(f"sqlite:///{path}")


def test_not_a_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        Store(f"sqlite:///{path}")


def test_schema_snapshot_matches_the_models(tmp_path):
    """db/schema.sql is the reviewed DDL of the models; regenerate it with `python -m tools.dump_schema`."""
    from tools.dump_schema import ddl
    assert (resource_dir("db") / "schema.sql").read_text() == ddl()


def test_a_version_1_database_is_migrated(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((Path(__file__).parent / "data" / "schema_v1.sql").read_text())
        conn.execute("INSERT INTO schema_info VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO items (id, key, tags) VALUES (0, 'a', '{}')")
    store = Store(f"sqlite:///{path}")
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT positions, first_row, tokens FROM items")).one() == (1, None, None)
    store.close()
