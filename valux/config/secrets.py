"""Passwords stay out of actor constructor arguments (DESIGN.md, "Users and security").

A Ray actor's constructor arguments are stored by Ray (in its control store, shown by its
tools) and handed again to every restart. So valux gives its actors database and Redis
URLs *without* their passwords (:func:`without_password`, :func:`public_settings`), and
each actor process finds the password in its own environment (:func:`with_password`):

- PostgreSQL: ``DATABASE_URL`` in the actor's environment, when it names the same server,
  user and database, else PostgreSQL's standard ``PGPASSWORD`` or password file
  (``~/.pgpass``, mode 0600), which asyncpg reads by itself;
- Redis: ``REDIS_URL`` in the environment under the same rule, else ``VALUX_REDIS_PASSWORD``;
- Jupiter's API key: ``VALUX_JUPITER__API_KEY`` (:func:`jupiter_api_key`).

A Ray worker inherits the environment of its node's raylet. For the local Ray instance
valux starts itself, :func:`export_for_actors` puts the passwords into this process's
environment first, so every worker has them; on a cluster started with ``ray start``,
the operator exports them before ``ray start`` on every node (``cluster.yaml`` does).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from valux.config.settings import Settings

__all__ = [
    "JUPITER_KEY_ENV",
    "export_for_actors",
    "jupiter_api_key",
    "password_of",
    "public_settings",
    "with_password",
    "without_password",
]

_ENV_FOR_SCHEME = {
    "postgres": "DATABASE_URL",
    "postgresql": "DATABASE_URL",
    "redis": "REDIS_URL",
    "rediss": "REDIS_URL",
    "unix": "REDIS_URL",
}


def _netloc(parts: SplitResult, password: str | None) -> str:
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    if password is not None:
        user = f"{user}:{password}"
    return f"{user}@{host}" if user else host


def password_of(url: str | None) -> str | None:
    """The password in ``url`` (None without one)."""
    if not url:
        return None
    return urlsplit(url).password


def without_password(url: str | None) -> str | None:
    """``url`` with its password removed (user, host, path and query kept)."""
    if not url or password_of(url) is None:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=_netloc(parts, None)))


def _same_target(a: SplitResult, b: SplitResult) -> bool:
    def key(p: SplitResult) -> tuple[Any, ...]:
        return (p.hostname, p.port, p.username or "", p.path)

    return key(a) == key(b)


def with_password(url: str | None) -> str | None:
    """``url`` with the password this process's environment holds for it (see the module
    docstring); ``url`` itself when it has one already or none is known here."""
    if not url or password_of(url) is not None:
        return url
    parts = urlsplit(url)
    env_name = _ENV_FOR_SCHEME.get(parts.scheme)
    password: str | None = None
    if env_name:
        env_url = os.environ.get(env_name)
        if env_url and _same_target(urlsplit(env_url), parts):
            password = urlsplit(env_url).password
    if password is None and env_name == "REDIS_URL":
        password = os.environ.get("VALUX_REDIS_PASSWORD") or None
    if password is None:  # PostgreSQL: asyncpg reads PGPASSWORD / the password file itself
        return url
    return urlunsplit(parts._replace(netloc=_netloc(parts, password)))


def export_for_actors(
    database_url: str | None, redis_url: str | None, jupiter_key: str | None = None
) -> None:
    """Put the secrets valux uses into this process's environment, for the local Ray
    instance it is about to start (its workers inherit the environment)."""
    if (password := password_of(database_url)) is not None:
        os.environ["DATABASE_URL"] = str(database_url)
        os.environ["PGPASSWORD"] = password
    if (password := password_of(redis_url)) is not None:
        os.environ["REDIS_URL"] = str(redis_url)
        os.environ["VALUX_REDIS_PASSWORD"] = password
    if jupiter_key:
        os.environ[JUPITER_KEY_ENV] = jupiter_key


JUPITER_KEY_ENV = "VALUX_JUPITER__API_KEY"


def jupiter_api_key() -> str | None:
    """Jupiter's API key, from this process's environment (None: no key)."""
    return os.environ.get(JUPITER_KEY_ENV) or None


def public_settings(settings: Settings) -> Settings:
    """``settings`` as actors get them: every URL without its password."""
    data: dict[str, Any] = settings.model_dump()
    data["database"]["url"] = without_password(data["database"]["url"])
    data["redis"]["url"] = without_password(data["redis"]["url"])
    paper = data["venue"]["paper"]
    paper["database_url"] = without_password(paper["database_url"])
    data["jupiter"]["api_key"] = None
    return Settings.model_validate(data)
