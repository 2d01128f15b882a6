"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from launchyard.server.db import Database, migrate
from launchyard.server.tables import Base


def test_migrations_match_the_tables(database_url: str) -> None:
    db = Database(database_url)
    try:
        migrate(db.engine)
        migrate(db.engine)  # idempotent: a restart runs it again
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        db.dispose()
