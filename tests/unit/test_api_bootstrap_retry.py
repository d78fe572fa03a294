"""Start-up survives a database blip while it bootstraps the first admin: the bootstrap is
tried again until PostgreSQL answers, and gives up (raising) only past its deadline. A
chaos run's API process once exited on such a blip and stayed down."""

from __future__ import annotations

from typing import Any

import pytest

from valux.api.app import bootstrap_when_reachable
from valux.api.auth_service import BootstrapAdmin
from valux.errors import Unavailable


class FlakyAuth:
    """``bootstrap_admin`` refuses ``failures`` times with the store's 503, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def bootstrap_admin(self, holder: Any) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise Unavailable("database unreachable (ConnectionDoesNotExistError: closed)")
        holder.email = "admin@valux.local"


async def test_a_blip_during_the_bootstrap_is_waited_out() -> None:
    auth, holder = FlakyAuth(failures=3), BootstrapAdmin()
    await bootstrap_when_reachable(auth, holder, retry_every_s=0.0)  # type: ignore[arg-type]
    assert auth.calls == 4 and holder.email == "admin@valux.local"


async def test_a_database_down_past_the_deadline_still_fails_start_up() -> None:
    auth = FlakyAuth(failures=10**9)
    with pytest.raises(Unavailable, match="database unreachable"):
        await bootstrap_when_reachable(
            auth,  # type: ignore[arg-type]
            BootstrapAdmin(),
            wait_s=0.05,
            retry_every_s=0.01,
        )
    assert auth.calls > 1
