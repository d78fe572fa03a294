"""The machine's server for the unit tests that need a real one, else an embedded one:
the rule :mod:`tests.unit.pg_support` and :mod:`tests.unit.redis_support` share."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest


class Embedded(Protocol):
    def start(self) -> str: ...

    def stop(self) -> None: ...


def local_or_embedded(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    env: str,
    default: str,
    answers: Callable[[str], bool],
    embedded: Callable[[Path], Embedded],
) -> Iterator[str]:
    """Yield ``$env`` (else ``default``) if a server answers there, else the URL of an
    embedded server started under a temp directory and stopped after (the body of a
    module-scoped fixture)."""
    url = os.environ.get(env) or default
    if answers(url):
        yield url
        return
    server = embedded(Path(tmp_path_factory.mktemp(env.lower())))
    try:
        yield server.start()
    finally:
        server.stop()
