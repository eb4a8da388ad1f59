"""Alembic's environment for the service's database. Configured in code (no alembic.ini):
`Database.upgrade()` hands over its open connection as `config.attributes["connection"]`,
inside its own transaction (and, on PostgreSQL, holding the upgrade lock)."""

from __future__ import annotations

from alembic import context

from autograder.service.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the service's migrations run through autograder.service.database."
                       "Database.upgrade(), which passes its connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite changes most columns only by copying the table: let future migrations do that.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
