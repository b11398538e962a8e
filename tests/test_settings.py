from __future__ import annotations

import subprocess
import sys

import pytest

from kai_inventory.settings import DEV_JWT_SECRET, Settings, SettingsError, load_settings


def test_defaults_match_the_contract() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/kai"
    assert (settings.hold_ttl_s, settings.max_hold_ttl_s) == (600, 1800)
    assert (settings.max_seats_per_hold, settings.max_active_holds_per_user) == (4, 3)
    assert settings.hold_rate_per_min == 30
    assert settings.timezone == "Asia/Jakarta"
    assert settings.ws_coalesce_ms == 50
    assert settings.anonymous_reads is True
    assert settings.jwt_secret == DEV_JWT_SECRET


def test_values_are_parsed_from_the_environment() -> None:
    settings = load_settings(
        {
            "KAI_HOLD_TTL_S": "30",
            "KAI_MAX_ACTIVE_HOLDS_PER_USER": "0",
            "KAI_ANONYMOUS_READS": "0",
            "KAI_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "REDIS_URL": "redis+cluster://127.0.0.1:7000",
        }
    )
    assert settings.hold_ttl_s == 30
    assert settings.max_active_holds_per_user == 0
    assert settings.anonymous_reads is False
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.is_cluster


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAI_HOLD_TTL_S", "ten"),
        ("KAI_HOLD_TTL_S", "0"),
        ("KAI_ANONYMOUS_READS", "maybe"),
        ("KAI_TIMEZONE", "Mars/Olympus"),
        ("REDIS_URL", "http://localhost"),
        ("DATABASE_URL", "mysql://x"),
        ("KAI_JWT_SECRET", "short"),
        ("KAI_WS_COALESCE_MS", "-1"),
    ],
)
def test_a_malformed_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_an_unknown_kai_variable_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="KAI_HOLD_TTL_SECONDS"):
        load_settings({"KAI_HOLD_TTL_SECONDS": "5"})


def test_hold_ttl_above_the_maximum_is_refused() -> None:
    with pytest.raises(SettingsError, match="KAI_MAX_HOLD_TTL_S"):
        load_settings({"KAI_HOLD_TTL_S": "100", "KAI_MAX_HOLD_TTL_S": "50"})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.hold_ttl_s = 1  # type: ignore[misc]


def test_cli_stops_at_start_with_a_message_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kai_inventory.cli", "migrate", "status"],
        env={"KAI_HOLD_TTL_S": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "KAI_HOLD_TTL_S" in result.stderr
