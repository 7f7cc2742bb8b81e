"""Settings validation: every number finite and in range, every CIDR parsed, all at load time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mchat_bot.config import ConfigError, OneOrMany, Settings, load_settings

BASE = ""
ENV = {"MCHAT_MATTERMOST_TOKEN": "t0ken", "MCHAT_MATTERMOST_URL": "http://127.0.0.1:1"}


def _load(tmp_path: Path, extra: str, env: dict[str, str] | None = None) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(BASE + extra)
    return load_settings(config, env=ENV | (env or {}))


def _numeric_keys() -> list[tuple[str, str, type]]:
    """(section, key, type) of every int and float setting, read off the Settings dataclasses."""
    out = []
    settings = Settings()
    for section in dataclasses.fields(settings):
        obj = getattr(settings, section.name)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append((section.name, f.name, type(value)))
    return out


NUMERIC = _numeric_keys()


def test_the_defaults_pass(tmp_path: Path) -> None:
    assert _load(tmp_path, "").bot.workers == 16


@pytest.mark.parametrize(("section", "key", "kind"), NUMERIC, ids=[f"{s}.{k}" for s, k, _ in NUMERIC])
def test_a_negative_number_is_refused_naming_the_key(
    tmp_path: Path, section: str, key: str, kind: type
) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: must be"):
        _load(tmp_path, f"[{section}]\n{key} = -1\n")


@pytest.mark.parametrize("literal", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("section", "key"),
    [(s, k) for s, k, kind in NUMERIC if kind is float],
    ids=[f"{s}.{k}" for s, k, kind in NUMERIC if kind is float],
)
def test_nan_and_inf_are_refused(tmp_path: Path, section: str, key: str, literal: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: must be a finite number"):
        _load(tmp_path, f"[{section}]\n{key} = {literal}\n")


def test_nan_from_the_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^mattermost\.request_timeout: must be a finite number"):
        _load(tmp_path, "", env={"MCHAT_MATTERMOST_REQUEST_TIMEOUT": "nan"})


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[bot]\nworkers = 0\n", "bot.workers"),
        ("[llm]\ntimeout = 0\n", "llm.timeout"),
        ("[http]\nmax_body_bytes = 10\n", "http.max_body_bytes"),
        ("[webhooks]\nresponse_budget = 120\n", "webhooks.response_budget"),
        ("[memory]\ntop_k = 100000\n", "memory.top_k"),
        ("[mattermost]\nsafety_rate_per_sec = 0\n", "mattermost.safety_rate_per_sec"),
        ("[mattermost]\nsafety_rate_per_sec = 2000000\n", "mattermost.safety_rate_per_sec"),
        ("[mattermost]\nrate_per_sec = 2000000\n", "mattermost.rate_per_sec"),
    ],
)
def test_out_of_range_values_are_refused(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: must be"):
        _load(tmp_path, extra)


def test_rate_limits_follow_the_server_by_default(tmp_path: Path) -> None:
    mm = _load(tmp_path, "").mattermost
    assert mm.rate_per_sec == 0  # no explicit cap: pace to the server's X-RateLimit-*
    assert mm.safety_rate_per_sec == 1000  # only while the server sends none
    env = {"MCHAT_MATTERMOST_SAFETY_RATE_PER_SEC": "500"}
    mm = _load(tmp_path, "[mattermost]\nrate_per_sec = 25\n", env=env).mattermost
    assert (mm.rate_per_sec, mm.safety_rate_per_sec) == (25, 500)


def test_zero_is_allowed_where_it_means_at_once(tmp_path: Path) -> None:
    settings = _load(tmp_path, "[ux]\nfeedback_delay = 0\n[bot]\nshutdown_grace = 0\n")
    assert settings.ux.feedback_delay == 0 and settings.bot.shutdown_grace == 0


@pytest.mark.parametrize("cidr", ["not-a-cidr", "10.0.0.0/33", "300.1.1.1", ""])
def test_a_bad_cidr_is_refused_at_load_time(tmp_path: Path, cidr: str) -> None:
    with pytest.raises(ConfigError, match=r"^http\.allow_from: not an address or CIDR"):
        _load(tmp_path, f"[http]\nallow_from = [{cidr!r}]\n")


def test_good_cidrs_and_addresses_pass(tmp_path: Path) -> None:
    settings = _load(tmp_path, "[http]\nallow_from = ['10.0.0.0/8', '127.0.0.1', '::1', '192.168.1.7/24']\n")
    assert len(settings.http.allow_from) == 4


def test_a_bad_operator_cidr_names_its_own_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^http\.allow_from_metrics: not an address or CIDR"):
        _load(tmp_path, "[http]\nallow_from = ['10.0.0.0/8']\nallow_from_metrics = ['nope']\n")


def test_the_incoming_webhook_must_be_the_servers_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^webhooks\.incoming_url: must be an incoming webhook"):
        _load(tmp_path, "", env={"MCHAT_WEBHOOKS_INCOMING_URL": "http://127.0.0.2:9/hooks/x"})
    ok = _load(tmp_path, "", env={"MCHAT_WEBHOOKS_INCOMING_URL": "http://127.0.0.1:1/hooks/abc"})
    assert ok.webhooks.incoming_url.get().endswith("/hooks/abc")


def test_llm_masking_is_on_by_default_and_switched_by_file_or_environment(tmp_path: Path) -> None:
    assert _load(tmp_path, "").llm.mask_sensitive is True
    assert _load(tmp_path, "[llm]\nmask_sensitive = false\n").llm.mask_sensitive is False
    assert _load(tmp_path, "", env={"MCHAT_LLM_MASK_SENSITIVE": "off"}).llm.mask_sensitive is False
    with pytest.raises(ConfigError, match=r"^llm\.mask_sensitive: expected a boolean"):
        _load(tmp_path, "[llm]\nmask_sensitive = 'no'\n")
    with pytest.raises(ConfigError, match=r"^llm\.mask_sensitive \(from MCHAT_LLM_MASK_SENSITIVE\)"):
        _load(tmp_path, "", env={"MCHAT_LLM_MASK_SENSITIVE": "maybe"})


def test_late_after_defaults_to_two_minutes_and_zero_switches_the_note_off(tmp_path: Path) -> None:
    assert _load(tmp_path, "").ux.late_after == 120.0
    assert _load(tmp_path, "", env={"MCHAT_UX_LATE_AFTER": "0"}).ux.late_after == 0


def test_llm_model_and_api_base_take_one_name_or_a_list(tmp_path: Path) -> None:
    one = load_settings(None, ENV | {"MCHAT_LLM_MODEL": "openai/x"})
    assert one.llm.model == ["openai/x"] and isinstance(one.llm.model, OneOrMany)
    many = load_settings(
        None, ENV | {"MCHAT_LLM_API_BASE": "http://a/v1, http://b/v1", "MCHAT_LLM_MODEL": ""}
    )
    assert many.llm.api_base == ["http://a/v1", "http://b/v1"] and not many.llm.model

    config = tmp_path / "c.toml"
    config.write_text('[llm]\nmodel = ["openai/a", "openai/b"]\napi_base = "http://a/v1"\n')
    toml = load_settings(config, ENV)
    assert toml.llm.model == ["openai/a", "openai/b"] and toml.llm.api_base == ["http://a/v1"]
    config.write_text("[llm]\nmodel = 3\n")
    with pytest.raises(ConfigError, match=r"llm\.model: expected a string or list of strings"):
        load_settings(config, ENV)


def test_storage_url_is_a_postgres_url_kept_secret_with_its_password(tmp_path: Path) -> None:
    url = "postgresql://bot:pg-pass-42@db.internal:5432/mchat"
    s = _load(tmp_path, '[memory]\nurl = "http://qdrant:6333"\n', env={"MCHAT_STORAGE_URL": url})
    assert s.storage.url.get() == url and "pg-pass-42" not in repr(s)
    assert url in s.secrets and "pg-pass-42" in s.secrets  # the log filter hides either form
    with pytest.raises(ConfigError, match=r"storage\.url"):
        _load(tmp_path, "", env={"MCHAT_STORAGE_URL": "mysql://bot@db/mchat"})
    assert not _load(tmp_path, "").storage.url  # unset: the SQLite file


def test_shared_state_needs_a_shared_memory_store_unless_told_otherwise(tmp_path: Path) -> None:
    shared = {"MCHAT_STORAGE_URL": "postgresql://bot@db.internal/mchat"}
    with pytest.raises(ConfigError, match=r"memory\.url: .*Qdrant server"):
        _load(tmp_path, "", env=shared)
    allowed = _load(tmp_path, "", env={**shared, "MCHAT_MEMORY_ALLOW_EMBEDDED_WITH_SHARED_STATE": "true"})
    assert allowed.memory.allow_embedded_with_shared_state and not allowed.memory.url
    assert _load(tmp_path, '[memory]\nurl = "http://qdrant:6333"\n', env=shared).memory.url
