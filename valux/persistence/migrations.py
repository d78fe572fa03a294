"""Plain SQL migrations, applied in file-name order, each exactly once.

The runner keeps a ``schema_migrations`` table and takes a PostgreSQL advisory
lock, so two processes starting at once never apply a file twice. Each file
runs in its own transaction; a failure stops start-up with the file name and
the database's error message (``MigrationError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from valux.errors import ValuxError

_LOCK_KEY = 0x56414C5558  # "VALUX"


class MigrationError(ValuxError):
    """A migration file failed; the message names the file and the database error."""

    code = "MIGRATION_FAILED"

    def __init__(self, message: str, filename: str = "") -> None:
        super().__init__(message)
        self.filename = filename

    def __reduce__(self) -> tuple[type[MigrationError], tuple[str, str]]:
        return (type(self), (self.message, self.filename))


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in ``valux/schema/migrations``, sorted by file name."""
    root = resources.files("valux.schema") / "migrations"
    files = sorted(
        (entry for entry in root.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name
    )
    return [Migration(entry.name, entry.read_text(encoding="utf-8")) for entry in files]


def migrations_from(directory: Path) -> list[Migration]:
    """Migrations from a directory (tests use this to exercise failure handling)."""
    return [
        Migration(path.name, path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.sql"))
    ]


async def apply_migrations(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[str]:
    """Apply every pending migration in order; return the names applied now."""
    todo = bundled_migrations() if migrations is None else migrations
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        for migration in todo:
            if migration.name in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (name) VALUES ($1)", migration.name
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.name} failed: {exc.__class__.__name__}: {exc}",
                    migration.name,
                ) from None
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
