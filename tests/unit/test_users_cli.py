"""``valux user create EMAIL [--admin]``: the password from stdin, the settings of ``valux``.

Runs the real command in a subprocess against a scratch database on the PostgreSQL of
``DATABASE_URL``, else a local server that answers, else an embedded one
(:mod:`tests.unit.pg_support`). No Ray, no Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from argon2 import PasswordHasher

from tests.unit.pg_support import postgres_for_tests
from valux.ops.scratch_db import scratch_database


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from postgres_for_tests(tmp_path_factory)


@pytest.fixture
async def database_url(admin_url: str) -> AsyncIterator[str]:
    async with scratch_database(admin_url, "valux_cli") as url:
        yield url


def valux(
    args: list[str], stdin: str, database_url: str, data_dir: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALUX_")}
    env.update(DATABASE_URL=database_url, VALUX_AUTH__PASSWORD_MEMORY_KIB="1024")
    return subprocess.run(
        [sys.executable, "-m", "valux.main", *args, "--data-dir", str(data_dir)],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_user_create_reads_the_password_from_stdin_and_claims_the_first_admin(
    database_url: str, tmp_path: Path
) -> None:
    """The first `--admin` becomes the first admin (owner of the data from before users) with
    an argon2id hash of the stdin password; a second user is a plain user; the password never
    appears in the output."""
    password = "a passphrase from stdin 42"
    done = valux(["user", "create", "ops@example.com", "--admin"], password + "\n",
                 database_url, tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "user ops@example.com created" in done.stderr and "role admin" in done.stderr
    assert password not in done.stderr + done.stdout
    done = valux(["user", "create", "alice@example.com"], "another passphrase 43\n",
                 database_url, tmp_path)  # fmt: skip
    assert done.returncode == 0 and "role user" in done.stderr
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT u.id, u.role, i.secret_hash FROM users u JOIN user_identities i"
            " ON i.user_id = u.id WHERE i.subject = 'ops@example.com'"
        )
        events = await conn.fetchval("SELECT count(*) FROM audit_log WHERE event = 'user_created'")
    finally:
        await conn.close()
    assert row["id"] == "u_admin" and row["role"] == "admin"
    assert row["secret_hash"].startswith("$argon2id$")
    assert PasswordHasher().verify(row["secret_hash"], password)
    assert events == 2


async def test_user_create_refuses_weak_passwords_duplicates_and_bad_usage(
    database_url: str, tmp_path: Path
) -> None:
    """A weak password and a taken e-mail exit 1 with one line and no traceback; a missing
    e-mail prints the usage and exits 2."""
    weak = valux(["user", "create", "a@example.com"], "short\n", database_url, tmp_path)
    assert weak.returncode == 1 and "too weak" in weak.stderr and "Traceback" not in weak.stderr
    ok = valux(["user", "create", "a@example.com"], "a fine passphrase 1\n", database_url, tmp_path)
    assert ok.returncode == 0, ok.stderr
    dup = valux(["user", "create", "A@example.com"], "a fine passphrase 2\n", database_url,
                tmp_path)  # fmt: skip
    assert dup.returncode == 1 and "already exists" in dup.stderr, dup.stderr
    usage = valux(["user", "create"], "", database_url, tmp_path)
    assert usage.returncode == 2 and "usage: valux user create" in usage.stderr
