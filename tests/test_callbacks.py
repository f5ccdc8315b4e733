"""Capability URLs, tokens and the [liangxin] settings (airflow_provider_liangxin.callbacks)."""

from __future__ import annotations

import hashlib

import pytest

from airflow_provider_liangxin.callbacks import (
    TRIGGER_CLASSPATH,
    CallbackSettings,
    callback_url_for,
    check_callback_url,
    deferral_settle_seconds,
    is_token_hash,
    new_token,
    redact_capability,
    token_hash,
    token_matches,
)


class FakeConf:
    def __init__(self, **values: str) -> None:
        self.values = values

    def get(self, section: str, key: str, fallback=None):
        assert section == "liangxin"
        return self.values.get(key, fallback)

    def getboolean(self, section: str, key: str, fallback=False):
        value = self.get(section, key)
        return fallback if value is None else value.lower() in ("true", "1", "t")


def test_tokens_are_fresh_high_entropy_and_only_their_hash_matches():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    stored = token_hash(token)
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert is_token_hash(stored)
    assert token_matches(token, stored)
    assert not token_matches(token + "x", stored)
    assert not token_matches(stored, stored)  # the hash is not the token
    assert not token_matches(token, None)
    assert not token_matches(token, "not-a-hash")
    assert not token_matches("", stored)
    assert not token_matches("x" * 1000, stored)


def test_url_names_the_task_instance_and_redaction_hides_only_the_token():
    url = callback_url_for("https://airflow.example.com/", "0190-ti", "SECRET")
    assert url == "https://airflow.example.com/liangxin/v1/callback/0190-ti/SECRET"
    assert redact_capability(url) == "https://airflow.example.com/liangxin/v1/callback/0190-ti/***"
    assert redact_capability(f"POST {url}?x=1 HTTP/1.1") == (
        "POST https://airflow.example.com/liangxin/v1/callback/0190-ti/***?x=1 HTTP/1.1"
    )
    assert redact_capability("https://example.com/hook/abc") == "https://example.com/hook/abc"


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "auto",
        "https://airflow.example.com/hook",
        "http://127.0.0.1:8080/cb",
        "http://localhost/cb",
        "http://[::1]:9/cb",
    ],
)
def test_accepted_callback_urls(url):
    check_callback_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://example.com/cb", "http://10.0.0.1/cb", "ftp://example.com/cb", "https:///nohost", "AUTO", "cb"],
)
def test_refused_callback_urls(url):
    with pytest.raises(ValueError, match="https://"):
        check_callback_url(url)


def test_refused_url_message_never_shows_a_token():
    with pytest.raises(ValueError, match="https://") as info:
        check_callback_url("http://example.com/liangxin/v1/callback/ti/SECRET")
    assert "SECRET" not in str(info.value)


def test_settings_defaults_and_values():
    assert CallbackSettings.from_conf(FakeConf()) == CallbackSettings()
    settings = CallbackSettings.from_conf(
        FakeConf(
            callback_receiver_enabled="True",
            callback_base_url=" https://airflow.example.com ",
            callback_fallback_poll_interval="120",
            callback_settle_seconds="0",
            callback_max_wakeups="5",
            callback_max_requests_per_second="50",
        )
    )
    assert settings == CallbackSettings(True, "https://airflow.example.com", 120.0, 0.0, 5, 50.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"callback_base_url": "http://airflow.example.com"}, "https://"),
        ({"callback_base_url": "https://airflow.example.com/liangxin"}, "without '/liangxin'"),
        ({"callback_fallback_poll_interval": "0.5"}, "callback_fallback_poll_interval must be a finite number >= 1"),
        ({"callback_settle_seconds": "-1"}, "callback_settle_seconds"),
        ({"callback_settle_seconds": "nan"}, "callback_settle_seconds"),
        ({"callback_max_wakeups": "lots"}, "callback_max_wakeups must be a number"),
        ({"callback_max_requests_per_second": "inf"}, "callback_max_requests_per_second"),
    ],
)
def test_bad_settings_name_the_option(values, message):
    with pytest.raises(ValueError, match=message):
        CallbackSettings.from_conf(FakeConf(**values))


def test_trigger_classpath_is_the_triggers():
    from airflow_provider_liangxin.triggers.liangxin import LiangxinTaskTrigger

    assert LiangxinTaskTrigger("t").serialize()[0] == TRIGGER_CLASSPATH


def test_deferral_settle_seconds_default_value_and_bad_values(caplog):
    assert deferral_settle_seconds(FakeConf()) == 15.0
    assert deferral_settle_seconds(FakeConf(deferral_settle_seconds="2.5")) == 2.5
    assert deferral_settle_seconds(FakeConf(deferral_settle_seconds="0")) == 0.0
    for bad in ("soon", "-1", "nan", "inf", "61"):
        caplog.clear()
        assert deferral_settle_seconds(FakeConf(deferral_settle_seconds=bad)) == 15.0
        assert "[liangxin] deferral_settle_seconds must be" in caplog.text
        assert "using 15 s" in caplog.text
