"""The service's schema is made by its Alembic migrations alone, and is exactly the models'
(on a SQLite file and on PostgreSQL); upgrading again changes nothing."""

from __future__ import annotations

import threading

import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from autograder.service.database import Database
from autograder.service.models import Base


def _differences(db: Database) -> list:
    with db.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def _version(db: Database) -> list[str]:
    with db.engine.connect() as connection:
        return [row[0] for row in
                connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))]


def test_upgrade_makes_exactly_the_models_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert not sqlalchemy.inspect(db.engine).get_table_names()
        assert _differences(db)  # the comparison sees a missing schema: it can fail
        db.upgrade()
        assert _differences(db) == []
        assert _version(db) == ["0001"]
        tables = set(sqlalchemy.inspect(db.engine).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        db.dispose()


def test_upgrade_is_idempotent_and_keeps_the_data(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.upgrade()
        with db.session() as session:
            session.execute(sqlalchemy.text(
                "INSERT INTO person (id, role, name, email, created_at) "
                "VALUES ('s1', 'student', 'A', 'a@x', CURRENT_TIMESTAMP)"))
        db.upgrade()
        again = Database(database_url)  # a second process starting later
        again.upgrade()
        again.dispose()
        assert _version(db) == ["0001"]
        assert _differences(db) == []
        with db.session(readonly=True) as session:
            assert session.execute(sqlalchemy.text("SELECT id FROM person")).all() == [("s1",)]
    finally:
        db.dispose()


def test_two_processes_upgrading_at_once_both_succeed(database_url: str) -> None:
    """`serve` and its embedded worker both upgrade at start: neither may fail."""
    databases = [Database(database_url) for _ in range(3)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(databases))

    def upgrade(db: Database) -> None:
        start.wait()
        try:
            db.upgrade()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=upgrade, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert _version(databases[0]) == ["0001"]
        assert _differences(databases[0]) == []
    finally:
        for db in databases:
            db.dispose()


def test_sqlite_connections_are_configured(tmp_path) -> None:  # noqa: ANN001
    db = Database(f"sqlite:///{tmp_path / 'service.db'}")
    try:
        with db.engine.connect() as connection:
            pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "busy_timeout", "foreign_keys")}
        assert pragma == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}
    finally:
        db.dispose()
