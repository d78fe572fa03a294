"""Port-conflict checks: one actionable line naming port, occupant, wanter and setting."""

from __future__ import annotations

import errno
import re
import socket
import threading
from collections.abc import Iterator

import pytest

from valux.errors import ConfigurationError, PortInUseError
from valux.ops.ports import describe_bind_error, ensure_port_free, free_port, identify_listener

RAY_HEAD = "valux's local Ray head"
RAY_HINT = "point ray.address at an existing cluster"


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A TCP socket listening on a free 127.0.0.1 port, owned by this test process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def test_taken_port_gives_one_line_with_port_who_and_setting(listening: socket.socket) -> None:
    """A port in use raises PortInUseError whose single line names port, host, occupant,
    who wanted it, the setting and its environment variable, and the alternative."""
    port = listening.getsockname()[1]
    with pytest.raises(PortInUseError) as info:
        ensure_port_free(
            "127.0.0.1", port, who=RAY_HEAD, setting="ray.dashboard_port", hint=RAY_HINT
        )
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"port {port} on 127.0.0.1 is already in use (")
    assert "this process" in message  # the occupant, found through /proc
    assert f"; {RAY_HEAD} wanted it — " in message
    assert message.endswith(
        "set ray.dashboard_port / VALUX_RAY__DASHBOARD_PORT to another port, "
        "or point ray.address at an existing cluster"
    )
    assert info.value.code == "PORT_IN_USE"


def test_wildcard_host_conflicts_with_a_loopback_listener(listening: socket.socket) -> None:
    """Checking 0.0.0.0 detects a listener on 127.0.0.1 of the same port."""
    port = listening.getsockname()[1]
    expected = re.escape(f"port {port} on 0.0.0.0 is already in use")
    with pytest.raises(PortInUseError, match=expected):
        ensure_port_free("0.0.0.0", port, who="the API", setting="api.port")


def test_bound_but_not_listening_port_is_also_taken() -> None:
    """A port merely bound (not listening) still cannot be used, and is reported the same way."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=re.escape("set api.port / VALUX_API__PORT")):
            ensure_port_free("127.0.0.1", port, who="the API", setting="api.port")


def test_free_port_and_port_zero_pass() -> None:
    """A free port passes the check, and port 0 (any free port) always passes."""
    ensure_port_free("127.0.0.1", free_port(), who="the API", setting="api.port")
    ensure_port_free("127.0.0.1", 0, who="the API", setting="api.port")


def test_free_port_returns_a_bindable_port() -> None:
    """free_port() returns a non-zero port that can then be bound on that host."""
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_describe_bind_error_from_a_real_failed_bind(listening: socket.socket) -> None:
    """The OSError of a failed server bind becomes the same one-line PortInUseError."""
    port = listening.getsockname()[1]
    with socket.socket() as other:
        try:
            other.bind(("127.0.0.1", port))
        except OSError as exc:
            error = describe_bind_error(exc, "127.0.0.1", port, "the API", "api.port")
        else:
            pytest.fail("bind unexpectedly succeeded")
    assert isinstance(error, PortInUseError)
    assert str(error).startswith(f"port {port} on 127.0.0.1 is already in use")
    assert "the API wanted it — set api.port / VALUX_API__PORT to another port" in str(error)


def test_describe_bind_error_for_privileged_ports() -> None:
    """EACCES is explained as a privileged port, still naming who and the setting."""
    exc = OSError(errno.EACCES, "Permission denied")
    message = str(describe_bind_error(exc, "0.0.0.0", 80, "the API", "api.port"))
    assert "port 80 on 0.0.0.0 needs privileges" in message
    assert "the API wanted it — set api.port / VALUX_API__PORT" in message


def test_describe_bind_error_keeps_free_text_settings() -> None:
    """A setting that is not a dotted key is shown as given (no invented env variable)."""
    exc = OSError(errno.EADDRINUSE, "Address already in use")
    message = str(describe_bind_error(exc, "127.0.0.1", 1, "the API", "--port"))
    assert message.endswith("set --port to another port")


def test_unresolvable_host_is_a_configuration_error() -> None:
    """A host name that does not resolve is reported as configuration, naming the setting."""
    with pytest.raises(ConfigurationError, match="does not resolve"):
        ensure_port_free("no-such-host.invalid", 8080, who="the API", setting="api.port")


def test_a_redis_speaking_occupant_is_named() -> None:
    """A listener that answers PING with +PONG is described as a Redis server when /proc does
    not give its process (here it does, so the test checks the probe directly)."""
    from valux.ops.ports import _answers_redis_ping

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def pong() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"+PONG\r\n")

    thread = threading.Thread(target=pong, daemon=True)
    thread.start()
    try:
        assert _answers_redis_ping("127.0.0.1", port)
    finally:
        thread.join(timeout=5)
        server.close()


def test_identify_listener_never_raises_for_a_free_port() -> None:
    """Identification of an unused port returns None instead of failing."""
    assert identify_listener("127.0.0.1", free_port()) is None
