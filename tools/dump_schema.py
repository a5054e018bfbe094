"""Print the SQLite DDL of the models; db/schema.sql is this output (`python -m tools.dump_schema > db/schema.sql`)."""

from sqlalchemy import create_mock_engine

from autointerp.store.schema import SCHEMA_VERSION, Base


def ddl() -> str:
    statements: list[str] = []
    engine = create_mock_engine("sqlite://", lambda sql, *a, **k: statements.append(str(sql.compile(dialect=engine.dialect)).strip()))
    Base.metadata.create_all(engine, checkfirst=False)
    return f"-- autointerp database schema, version {SCHEMA_VERSION} (generated from autointerp/store/schema.py)\n\n" + \
        "".join(s + ";\n\n" for s in statements)


if __name__ == "__main__":
    print(ddl(), end="")
