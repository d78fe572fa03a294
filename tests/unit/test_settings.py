"""Typed settings: layering, environment spellings, error reports, redaction."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pydantic
import pytest

from valux.config.settings import (
    FromFlag,
    Settings,
    SimToken,
    env_var_for,
    load_settings,
    redact_url,
)
from valux.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "valux.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(**kwargs: object) -> str:
    """The ConfigurationError message load_settings raises for these arguments."""
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigurationError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return info.value.message


# ------------------------------------------------------------------- defaults


def test_defaults_match_the_documented_values() -> None:
    """With no file, environment or flags every setting has its documented default."""
    s = load_settings(env={})
    assert s.ray.address is None
    assert s.ray.namespace == "valux"
    assert s.ray.dashboard_host == "127.0.0.1"
    assert s.ray.dashboard_port == 8265
    assert (s.database.url, s.database.pool_min_size, s.database.pool_max_size) == (None, 1, 4)
    assert s.database.connect_timeout_s == 10.0
    assert s.redis.url is None
    assert (s.api.host, s.api.port, s.api.max_body_bytes) == ("127.0.0.1", 8080, 1_048_576)
    assert s.api.shutdown_timeout_s == 10.0
    assert s.data_dir == Path.home() / ".valux"
    assert (s.hosting.agents_per_host, s.hosting.evaluators) == (200, 2)
    assert s.journal.snapshot_every_events == 100
    assert s.supervision.restart_intensity == 5
    assert s.supervision.step_timeout_s == 10.0
    assert s.feeds.simulated.enabled and s.feeds.simulated.seed == 42
    assert [t.symbol for t in s.feeds.simulated.tokens] == ["BONK", "WIF", "JUP", "POPCAT", "PYTH"]
    assert all(isinstance(t.start_price, Decimal) for t in s.feeds.simulated.tokens)
    assert not s.feeds.manual.enabled
    assert s.feeds.replay.path is None and s.feeds.replay.speed == 1.0
    assert s.feeds.stale_after_s == 10.0
    assert s.venue.kind == "paper" and s.venue.quote_asset == "SOL"
    assert s.venue.paper.fee_bps == 30
    assert s.venue.paper.depth_quote == Decimal("1000")
    assert s.venue.paper.network_fee == Decimal("0.000005")
    assert (s.logging.level, s.logging.format) == ("info", "json")
    assert s.source_of("api.port") == "default"


def test_example_config_is_valid_and_equals_the_defaults() -> None:
    """valux.example.toml loads without error and documents exactly the defaults."""
    from_file = load_settings(config_file=REPO_ROOT / "valux.example.toml", env={})
    assert from_file == load_settings(env={})


def test_example_config_names_every_setting() -> None:
    """Every leaf setting appears in valux.example.toml (commented out when it has no
    default value), so the documented file cannot drift behind the model."""
    text = (REPO_ROOT / "valux.example.toml").read_text(encoding="utf-8")

    def leaves(model: type[pydantic.BaseModel], prefix: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
                out += leaves(kind, f"{prefix}{name}.")
            else:
                out.append(f"{prefix}{name}")
        return out

    missing = [
        key
        for key in leaves(Settings, "")
        if not re.search(rf"^#? ?{re.escape(key.rsplit('.', 1)[-1])} = ", text, re.MULTILINE)
        and f"[[{key}]]" not in text
    ]
    assert missing == []


def test_settings_are_frozen_and_reject_unknown_fields() -> None:
    """Settings cannot be mutated after loading, and constructing one with a typo fails."""
    s = load_settings(env={})
    with pytest.raises(pydantic.ValidationError):
        s.api.port = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        SimToken(symbol="X", start_price=Decimal(1), volatilty=0.1)  # type: ignore[call-arg]


# ----------------------------------------------------------------- precedence


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    """defaults < file < environment < flags, per key, and each value knows its source."""
    config = write(
        tmp_path,
        """
        [api]
        port = 1001
        host = "0.0.0.0"
        shutdown_timeout_s = 3.0
        [hosting]
        evaluators = 3
        """,
    )
    s = load_settings(
        config_file=config,
        env={"VALUX_API__PORT": "1002", "VALUX_API__HOST": "127.0.0.2"},
        overrides={"api.port": FromFlag(1003, "--port")},
    )
    assert s.api.port == 1003
    assert s.source_of("api.port") == "flag --port"
    assert s.api.host == "127.0.0.2"
    assert s.source_of("api.host") == "env VALUX_API__HOST"
    assert s.api.shutdown_timeout_s == 3.0
    assert s.source_of("api.shutdown_timeout_s") == f"file {config}"
    assert s.hosting.evaluators == 3
    assert s.api.max_body_bytes == 1_048_576
    assert s.source_of("api.max_body_bytes") == "default"


def test_plain_override_values_are_labelled_with_their_key() -> None:
    """An override without FromFlag still wins and is reported as 'override <key>'."""
    s = load_settings(env={"VALUX_API__PORT": "9000"}, overrides={"api.port": 0})
    assert s.api.port == 0
    assert s.source_of("api.port") == "override api.port"


def test_file_table_merges_with_defaults_of_the_same_section(tmp_path: Path) -> None:
    """Setting one key of a section in the file keeps the other keys of that section."""
    s = load_settings(config_file=write(tmp_path, "[venue.paper]\nfee_bps = 5\n"), env={})
    assert s.venue.paper.fee_bps == 5
    assert s.venue.paper.depth_quote == Decimal("1000")
    assert s.venue.quote_asset == "SOL"


# ------------------------------------------------------------ env spellings


@pytest.mark.parametrize(
    ("name", "value", "key", "expected"),
    [
        ("VALUX_API__PORT", "9000", "api.port", 9000),
        ("valux_api__port", "9001", "api.port", 9001),
        ("Valux_Api__Port", "9002", "api.port", 9002),
        ("VALUX_HOSTING__AGENTS_PER_HOST", "1", "hosting.agents_per_host", 1),
        ("VALUX_DATA_DIR", "/srv/valux", "data_dir", Path("/srv/valux")),
        ("VALUX_FEEDS__SIMULATED__SEED", "7", "feeds.simulated.seed", 7),
        ("VALUX_FEEDS__REPLAY__SPEED", "0", "feeds.replay.speed", 0.0),
        ("VALUX_FEEDS__MANUAL__ENABLED", "true", "feeds.manual.enabled", True),
        ("VALUX_VENUE__PAPER__NETWORK_FEE", "0.00001", "venue.paper.network_fee", Decimal("1e-5")),
        ("VALUX_LOGGING__LEVEL", "DEBUG", "logging.level", "debug"),
        ("DATABASE_URL", "postgresql://u@h/db", "database.url", "postgresql://u@h/db"),
        ("REDIS_URL", "redis://h:6379/0", "redis.url", "redis://h:6379/0"),
        ("RAY_ADDRESS", "auto", "ray.address", "auto"),
    ],
)
def test_environment_spellings(name: str, value: str, key: str, expected: object) -> None:
    """Each documented environment spelling sets its dotted key, converted to the field's type."""
    s = load_settings(env={name: value})
    node: object = s
    for part in key.split("."):
        node = getattr(node, part)
    assert node == expected
    assert s.source_of(key) == f"env {name}"


def test_specific_env_name_beats_the_well_known_one() -> None:
    """VALUX_DATABASE__URL wins over DATABASE_URL when both are set."""
    s = load_settings(
        env={"DATABASE_URL": "postgresql://generic/db", "VALUX_DATABASE__URL": "postgresql://x/y"}
    )
    assert s.database.url == "postgresql://x/y"
    assert s.source_of("database.url") == "env VALUX_DATABASE__URL"


def test_empty_env_value_unsets_an_optional_setting(tmp_path: Path) -> None:
    """An empty VALUX_* value means None for optional settings; an empty DATABASE_URL is ignored."""
    config = write(tmp_path, '[ray]\naddress = "auto"\nnamespace = "x"\n')
    s = load_settings(
        config_file=config,
        env={"VALUX_RAY__ADDRESS": "", "DATABASE_URL": ""},
    )
    assert s.ray.address is None
    assert s.database.url is None


def test_json_env_value_sets_a_list() -> None:
    """A VALUX_* value starting with '[' is parsed as JSON, e.g. the simulated token list."""
    s = load_settings(
        env={
            "VALUX_FEEDS__SIMULATED__TOKENS": '[{"symbol": "AAA", "start_price": "0.5"}]',
        }
    )
    assert s.feeds.simulated.tokens == (SimToken(symbol="AAA", start_price=Decimal("0.5")),)


def test_paths_expand_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'~' in data_dir and feeds.replay.path is expanded, from the file and from the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = write(tmp_path, 'data_dir = "~/vx"\n[feeds.replay]\npath = "~/ticks.csv"\n')
    s = load_settings(config_file=config, env={})
    assert s.data_dir == tmp_path / "vx"
    assert s.feeds.replay.path == tmp_path / "ticks.csv"
    assert load_settings(env={"VALUX_DATA_DIR": "~/other"}).data_dir == tmp_path / "other"


def test_money_from_toml_stays_an_exact_decimal(tmp_path: Path) -> None:
    """Prices written as TOML strings load as exact Decimals, not floats."""
    config = write(
        tmp_path,
        '[[feeds.simulated.tokens]]\nsymbol = "X"\nstart_price = "0.000000123456789"\n',
    )
    (token,) = load_settings(config_file=config, env={}).feeds.simulated.tokens
    assert token.start_price == Decimal("0.000000123456789")


def test_port_zero_is_allowed() -> None:
    """api.port = 0 (pick a free port) is valid."""
    s = load_settings(env={"VALUX_API__PORT": "0"})
    assert s.api.port == 0


# --------------------------------------------------------------------- errors


def test_every_problem_is_reported_once_with_its_source(tmp_path: Path) -> None:
    """Unknown file key, unknown env key, invalid values: ONE error, one line each, with source."""
    config = write(tmp_path, "[api]\nprot = 8081\n[hosting]\nagents_per_host = 0\n")
    message = error_of(
        config_file=config,
        env={"VALUX_BOGUS": "1", "VALUX_API__PORT": "70000"},
        overrides={"hosting.evaluators": FromFlag(0, "--evaluators")},
    )
    lines = message.splitlines()
    assert lines[0] == "invalid settings (5 problems):"
    problems = lines[1:]
    assert len(problems) == 5

    def line_for(key: str) -> str:
        (found,) = [p for p in problems if p.startswith(f"  - {key}:")]
        return found

    assert "unknown setting" in line_for("api.prot")
    assert "did you mean api.port?" in line_for("api.prot")
    assert f"file {config}" in line_for("api.prot")
    assert "unknown setting" in line_for("bogus")
    assert "env VALUX_BOGUS" in line_for("bogus")
    assert "less than or equal to 65535" in line_for("api.port")
    assert "got '70000' from env VALUX_API__PORT" in line_for("api.port")
    assert "greater than or equal to 1" in line_for("hosting.agents_per_host")
    assert f"from file {config}" in line_for("hosting.agents_per_host")
    assert "from flag --evaluators" in line_for("hosting.evaluators")


def test_error_has_no_chained_traceback() -> None:
    """The ConfigurationError does not carry the pydantic ValidationError as its cause/context."""
    with pytest.raises(ConfigurationError) as info:
        load_settings(env={"VALUX_API__PORT": "x"})
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_malformed_env_name_is_reported() -> None:
    """A VALUX_ name with an empty level (triple underscore) is a problem of its own."""
    message = error_of(env={"VALUX_API___PORT": "1"})
    assert "env VALUX_API___PORT: not a setting name" in message


def test_unknown_key_inside_a_list_item_is_located(tmp_path: Path) -> None:
    """Problems inside array-of-tables items name the item index."""
    config = write(
        tmp_path,
        '[[feeds.simulated.tokens]]\nsymbol = "X"\nstart_price = "-1"\n',
    )
    message = error_of(config_file=config)
    assert "feeds.simulated.tokens[0].start_price: Input should be greater than 0" in message
    assert f"from file {config}" in message


def test_cross_field_errors_name_each_field_source() -> None:
    """pool_min_size > pool_max_size is reported with the source of each of the two fields."""
    message = error_of(env={"VALUX_DATABASE__POOL_MIN_SIZE": "9"})
    assert "database: pool_min_size (9) must not exceed pool_max_size (4)" in message
    assert "pool_min_size from env VALUX_DATABASE__POOL_MIN_SIZE" in message
    assert "pool_max_size default" in message


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DATABASE_URL": "mysql://u@h/db"}, "database.url: must be a postgresql://"),
        ({"REDIS_URL": "http://h"}, "redis.url: must be a redis://, rediss:// or unix:// URL"),
        ({"VALUX_VENUE__PAPER__FEE_BPS": "10001"}, "venue.paper.fee_bps"),
        ({"VALUX_VENUE__PAPER__FAILURE_RATE": "1.5"}, "venue.paper.failure_rate"),
        ({"VALUX_VENUE__KIND": "jupiter"}, "venue.kind: Input should be 'paper'"),
        ({"VALUX_LOGGING__FORMAT": "xml"}, "logging.format"),
        ({"VALUX_FEEDS__REPLAY__SPEED": "-1"}, "feeds.replay.speed"),
    ],
)
def test_invalid_values_are_rejected(env: dict[str, str], fragment: str) -> None:
    """Out-of-range or malformed values fail with the dotted key in the message."""
    assert fragment in error_of(env=env)


def test_duplicate_token_symbols_are_rejected() -> None:
    """Two simulated tokens with the same symbol are a configuration error."""
    tokens = '[{"symbol": "A", "start_price": "1"}, {"symbol": "A", "start_price": "2"}]'
    assert "duplicate token symbols: A" in error_of(env={"VALUX_FEEDS__SIMULATED__TOKENS": tokens})


def test_passwords_in_invalid_urls_are_not_echoed() -> None:
    """An invalid URL in an error line has its password masked."""
    message = error_of(env={"DATABASE_URL": "mysql://user:hunter2@h/db"})
    assert "hunter2" not in message
    assert "mysql://user:***@h/db" in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A TOML syntax error says which file and which line."""
    config = write(tmp_path, '[api]\nhost = "x"\nport = = 3\n')
    message = error_of(config_file=config)
    assert str(config) in message
    assert "not valid TOML" in message
    assert "line 3" in message


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """A config file that does not exist is an error naming the path."""
    missing = tmp_path / "nope.toml"
    assert error_of(config_file=missing) == f"config file {missing} does not exist"


# ------------------------------------------------------------------ redaction


def test_redacted_masks_passwords_only() -> None:
    """redacted() masks URL passwords and leaves everything else printable as JSON."""
    s = load_settings(
        env={
            "DATABASE_URL": "postgresql://valux:s3cret@db.example:5432/valux",
            "REDIS_URL": "redis://:r3dis@cache:6379/0",
            "RAY_ADDRESS": "ray://head:10001",
        }
    )
    data = s.redacted()
    assert data["database"]["url"] == "postgresql://valux:***@db.example:5432/valux"
    assert data["redis"]["url"] == "redis://:***@cache:6379/0"
    assert data["ray"]["address"] == "ray://head:10001"
    assert data["venue"]["paper"]["network_fee"] == "0.000005"
    assert "s3cret" not in repr(data) and "r3dis" not in repr(data)
    # The settings themselves keep the real values.
    assert s.database.url == "postgresql://valux:s3cret@db.example:5432/valux"


def test_redact_url_leaves_urls_without_password_alone() -> None:
    """URLs without a password and non-URLs pass through unchanged."""
    assert redact_url("postgresql://postgres@/valux?host=/tmp/x") == (
        "postgresql://postgres@/valux?host=/tmp/x"
    )
    assert redact_url("auto") == "auto"


def test_env_var_for_maps_dotted_keys() -> None:
    """env_var_for gives the VALUX_ spelling of a dotted key."""
    assert env_var_for("ray.dashboard_port") == "VALUX_RAY__DASHBOARD_PORT"
    assert env_var_for("data_dir") == "VALUX_DATA_DIR"


def test_settings_pickle_with_their_sources() -> None:
    """Settings survive pickling (Ray actor arguments) including source information."""
    import pickle

    s = load_settings(env={"VALUX_API__PORT": "9"})
    copy = pickle.loads(pickle.dumps(s))
    assert copy == s
    assert isinstance(copy, Settings)
    assert copy.source_of("api.port") == "env VALUX_API__PORT"


def test_unknown_keys_get_a_suggestion_in_their_own_spelling(tmp_path: Path) -> None:
    """A near-miss env name suggests the VALUX_ spelling; a file typo suggests the dotted key;
    with no close match the section's known keys are listed."""
    message = error_of(env={"VALUX_API_PORT": "1", "VALUX_JOURNAL__X": "1"})
    assert "api_port: unknown setting; did you mean VALUX_API__PORT?" in message
    assert "journal.x: unknown setting in journal (known: snapshot_every_events," in message
    config = write(tmp_path, "[hosting]\nagent_per_host = 1\n")
    message = error_of(config_file=config)
    assert "did you mean hosting.agents_per_host?" in message
