"""PostgreSQL out of reach, said as such: the API's stores answer 503, never a 500."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from ray.exceptions import RayError

from valux.errors import Unavailable
from valux.persistence.journal import DATABASE_DOWN

__all__ = ["database_unreachable", "db_guard"]

P = ParamSpec("P")
R = TypeVar("R")


def database_unreachable(exc: BaseException) -> str:
    """The message for a PostgreSQL that refused, dropped or did not answer a query.

    A timeout of the pool (:mod:`valux.persistence.bounded_pool`) says so, and that a
    write may still have been applied; any other error (a Ray timeout included: a guarded
    method may call actors too) is named by its type."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, RayError):
        return (
            "database unreachable (no answer in time; a write may have been applied: "
            "read before repeating one that is not idempotent)"
        )
    return f"database unreachable ({type(exc).__name__}: {exc})"


def db_guard(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """PostgreSQL unreachable (:data:`DATABASE_DOWN`) → :class:`Unavailable` saying so."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except DATABASE_DOWN as exc:
            raise Unavailable(database_unreachable(exc)) from None

    return guarded
