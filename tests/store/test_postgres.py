"""The store on PostgreSQL: engine errors, the advisory run lock, migrations; the same on SQLite where
the behaviour is shared."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from autointerp.cli import main
from autointerp.errors import StoreError
from autointerp.store.engine import Store
from autointerp.store.schema import SCHEMA_VERSION

V1 = Path(__file__).parent / "data" / "schema_v1.sql"


def test_a_new_postgresql_database_gets_the_schema(postgres_server):
    store = Store(postgres_server.new_database())
    assert store.engine.dialect.name == "postgresql" and store.schema_version() == SCHEMA_VERSION
    store.close()


def test_unreachable_server_is_one_line_and_exit_2(tmp_path, capsys):
    from tests.postgres import free_port
    url = f"postgresql+psycopg://someone:s3cret@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError, match="cannot open database .*start the server") as caught:
        Store(url)
    assert "\n" not in str(caught.value) and "s3cret" not in str(caught.value)
    assert main(["mine", "--db", url, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("autointerp: error: cannot open database") and "Traceback" not in "".join(err)


def test_a_missing_driver_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['psycopg'] = None\n"  # as if not installed
            "from autointerp.cli import main\n"
            f"sys.exit(main(['mine', '--db', 'postgresql+psycopg://u@127.0.0.1/x', '--out', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "no driver" in last and "pip install 'autointerp[postgres]'" in last and "Traceback" not in done.stderr


def test_the_advisory_lock_refuses_a_second_run_naming_the_first_and_dies_with_its_process(postgres_server):
    url = postgres_server.new_database()
    store = Store(url)
    with store.exclusive("run"):
        with pytest.raises(StoreError, match=rf"is in use by another autointerp run \(pid {os.getpid()}, `run` since "):
            with Store(url).exclusive("explain"):
                pass
    with store.exclusive("explain"):  # released on exit
        pass
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from autointerp.store.engine import Store\n"
        f"s = Store({url!r})\n"
        "with s.exclusive('score'):\n    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(StoreError, match=rf"pid {holder.pid}, `score` since"):
        with store.exclusive("run"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with store.exclusive("run"):  # the server dropped the dead run's connection and its lock
        pass
    store.close()


def _v1_ddl(dialect: str) -> str:
    ddl = V1.read_text()
    if dialect == "postgresql":  # the same version-1 tables in PostgreSQL's types
        ddl = ddl.replace("DATETIME", "TIMESTAMP WITH TIME ZONE").replace("DOUBLE", "DOUBLE PRECISION")
        ddl = ddl.replace("\tid INTEGER NOT NULL,", "\tid SERIAL NOT NULL,")
    return ddl


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_1_database_is_migrated_on_both_backends(backend, tmp_path, request):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'v1.db'}"
        with sqlite3.connect(tmp_path / "v1.db") as conn:
            conn.executescript(_v1_ddl("sqlite"))
    else:
        url = request.getfixturevalue("postgres_server").new_database()
        import psycopg
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            for statement in filter(str.strip, "\n".join(
                    line for line in _v1_ddl("postgresql").splitlines() if not line.startswith("--")).split(";")):
                conn.execute(statement)
    from sqlalchemy import create_engine  # write the version-1 rows on either backend
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO schema_info VALUES ('schema_version', '1')"))
        conn.execute(text("INSERT INTO items (id, key, tags) VALUES (0, 'a', '{}')"))
    engine.dispose()
    store = Store(url)
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.begin() as conn:
        assert conn.execute(text("SELECT positions, first_row, tokens FROM items")).one() == (1, None, None)
        conn.execute(text("INSERT INTO llm_batches (tag, provider, model, purpose, status, requests, n_requests, "
                          "submitted_at) VALUES ('t', 'p', 'm', 'explain', 'submitted', '{}', 0, CURRENT_TIMESTAMP)"))
        assert conn.execute(text("SELECT id FROM llm_batches")).scalar() == 1  # the key autoincrements
    store.close()


def test_the_demo_exports_are_byte_identical_on_sqlite_and_postgresql(tmp_path, postgres_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--out", str(tmp_path / "sqlite")]) == 0
    assert main(["run", "--out", str(tmp_path / "pg"), "--db", postgres_server.new_database()]) == 0
    names = sorted(p.name for p in (tmp_path / "sqlite" / "export").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "pg" / "export").iterdir()) and "annotations.json" in names
    for name in names:
        assert (tmp_path / "sqlite" / "export" / name).read_bytes() == (tmp_path / "pg" / "export" / name).read_bytes(), name
