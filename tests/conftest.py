import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.config import load_config
from autointerp.store.engine import Store
from tests.factory import Planted, planted_corpus
from tests.postgres import PostgresServer, start_server

pytest_plugins = ["tests.raycluster"]  # the local Ray cluster fixture


@pytest.fixture(autouse=True)
def _seeds():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def planted(tmp_path: Path) -> Planted:
    return planted_corpus(tmp_path / "corpus")


@pytest.fixture
def config(planted: Planted, database: str | None):
    """The planted corpus's config; on the PostgreSQL backend (modules marked both_databases) its file
    names a fresh PostgreSQL database, so that the CLI run on the file uses it too."""
    if database is not None:
        text = planted.config.read_text()
        planted.config.write_text(text.replace("[output]\n", f"[output]\ndb = {database!r}\n", 1))
    return load_config(planted.config)


@pytest.fixture
def store(config) -> Store:
    s = Store(config.db_url)
    yield s
    s.close()


# --- databases: SQLite, and PostgreSQL on a throwaway server ----------------------------------------

def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "both_databases: run the module's tests on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc) -> None:
    if "database" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """A PostgreSQL server of Debian's `postgresql` package (initdb + pg_ctl, as the postgres user when
    run as root) in a temporary folder on a free loopback port, for the whole session."""
    server = start_server(Path(tempfile.mkdtemp(prefix="autointerp-pg-")))  # not under pytest's 0700 root folder
    yield server
    server.stop()


@pytest.fixture
def database(request) -> str | None:
    """None on SQLite (the config's own file); on PostgreSQL the URL of a new, empty database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    return request.getfixturevalue("postgres_server").new_database()
