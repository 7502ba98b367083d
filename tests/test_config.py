"""§10: configuration from FALLBACK_* variables; a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings, Sink, load_settings
from service.core.rules import Registry
from service.core.text import Unencodable


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FALLBACK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.group_id == "fallback-service"
    assert (s.input_topic, s.output_topic, s.events_topic, s.dlq_topic) == (
        "alimtalk.delivery.failed",
        "sms.send.requests",
        "fallback.events",
        "alimtalk.delivery.failed.dlq",
    )
    assert (s.channel_settings_topic, s.sender_numbers_topic) == (
        "fallback.channel-settings",
        "fallback.sender-numbers",
    )
    assert (s.sms_max_bytes, s.lms_title_max_bytes, s.lms_max_bytes) == (90, 40, 2000)
    assert s.unencodable is Unencodable.REPLACE
    assert s.sendno_registry is Registry.ENFORCE
    assert s.ad_quiet_hours == "21:00-08:00"
    assert s.http_port == 8080
    assert s.sinks == (Sink.KAFKA,)
    assert s.dedupe_topic_name == "fallback-service.dedupe"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACK_SMS_MAX_BYTES", "80")
    monkeypatch.setenv("FALLBACK_UNENCODABLE", "DROP")
    monkeypatch.setenv("FALLBACK_AD_QUIET_HOURS", "")
    monkeypatch.setenv("FALLBACK_INPUT_TOPIC", "in")
    s = load_settings()
    assert s.sms_max_bytes == 80
    assert s.unencodable is Unencodable.DROP
    assert s.policy().quiet_hours is None
    assert s.input_topic == "in"


def test_dotenv_file_is_read(tmp_path: object) -> None:
    with open(".env", "w") as f:
        f.write("FALLBACK_GROUP_ID=from-dotenv\n")
    assert load_settings().group_id == "from-dotenv"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FALLBACK_SMS_MAX_BYTES", "ninety"),
        ("FALLBACK_SMS_MAX_BYTES", "0"),
        ("FALLBACK_LMS_MAX_BYTES", "-5"),
        ("FALLBACK_UNENCODABLE", "ignore"),
        ("FALLBACK_SENDNO_REGISTRY", "maybe"),
        ("FALLBACK_AD_QUIET_HOURS", "9pm-8am"),
        ("FALLBACK_HTTP_PORT", "70000"),
        ("FALLBACK_SINK", "carrier-pigeon"),
        ("FALLBACK_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("FALLBACK_LOG_LEVEL", "LOUD"),
        ("FALLBACK_INPUT_TOPIC", ""),
        ("FALLBACK_CHARSET", "utf-8"),
        ("FALLBACK_MAX_AGE", "15"),
        ("FALLBACK_MAX_AGE", "0m"),
        ("FALLBACK_PROCESSING_GUARANTEE", "exactly-twice"),
        ("FALLBACK_KAFKA_GROUP_INSTANCE_ID", "pod 0"),
        ("FALLBACK_KAFKA_GROUP_INSTANCE_ID", ""),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_sasl_needs_credentials_and_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="FALLBACK_KAFKA_SASL_USERNAME"):
        load_settings()
    monkeypatch.setenv("FALLBACK_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("FALLBACK_KAFKA_SASL_PASSWORD", "hunter2")
    s = load_settings()
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())


def test_nhn_sink_needs_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACK_SINK", "nhn")
    with pytest.raises(ConfigError, match="FALLBACK_NHN_APP_KEY"):
        load_settings()
    monkeypatch.setenv("FALLBACK_NHN_APP_KEY", "app")
    with pytest.raises(
        ConfigError, match=r"FALLBACK_NHN_SECRET_KEY: .*FALLBACK_NHN_SECRET_KEY_FILE"
    ):
        load_settings()
    monkeypatch.setenv("FALLBACK_NHN_SECRET_KEY", "s3cret-value")
    settings = load_settings()
    api = settings.nhn()
    assert (api.app_key, api.secret_key.get_secret_value()) == ("app", "s3cret-value")
    assert api.base_url == "https://sms.api.nhncloudservice.com"
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in repr(api)


def test_nhn_with_exactly_once_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACK_SINK", "nhn")
    monkeypatch.setenv("FALLBACK_PROCESSING_GUARANTEE", "exactly-once")
    monkeypatch.setenv("FALLBACK_NHN_APP_KEY", "app")
    monkeypatch.setenv("FALLBACK_NHN_SECRET_KEY", "s")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "FALLBACK_SINK" in str(caught.value)
    assert "FALLBACK_PROCESSING_GUARANTEE=exactly-once" in str(caught.value)


def test_nhn_secret_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-the-file\n")
    monkeypatch.setenv("FALLBACK_SINK", "nhn")
    monkeypatch.setenv("FALLBACK_NHN_APP_KEY", "app")
    monkeypatch.setenv("FALLBACK_NHN_SECRET_KEY", "from-the-variable")
    monkeypatch.setenv("FALLBACK_NHN_SECRET_KEY_FILE", str(secret))
    assert load_settings().nhn().secret_key.get_secret_value() == "from-the-file"
    for broken in (tmp_path / "missing", tmp_path):
        monkeypatch.setenv("FALLBACK_NHN_SECRET_KEY_FILE", str(broken))
        with pytest.raises(ConfigError, match="FALLBACK_NHN_SECRET_KEY_FILE: cannot read"):
            load_settings().nhn()
    secret.write_text("  \n")
    monkeypatch.setenv("FALLBACK_NHN_SECRET_KEY_FILE", str(secret))
    with pytest.raises(ConfigError, match="FALLBACK_NHN_SECRET_KEY_FILE: the file is empty"):
        load_settings().nhn()


def test_nhn_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACK_SINK", "nhn")
    monkeypatch.setenv("FALLBACK_NHN_APP_KEY", "app")
    monkeypatch.setenv("FALLBACK_NHN_SECRET_KEY", "s")
    monkeypatch.setenv("FALLBACK_NHN_BASE_URL", "sms.api.nhncloudservice.com")
    with pytest.raises(ConfigError, match="FALLBACK_NHN_BASE_URL"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("kafka", (Sink.KAFKA,)),
        ("NHN", (Sink.NHN,)),
        ("nhn, solapi", (Sink.NHN, Sink.SOLAPI)),
        ("solapi,nhn", (Sink.SOLAPI, Sink.NHN)),
    ],
)
def test_sinks_in_failover_order(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[Sink, ...]
) -> None:
    monkeypatch.setenv("FALLBACK_SINK", value)
    for name, secret in (("NHN_APP_KEY", "app"), ("NHN_SECRET_KEY", "s")):
        monkeypatch.setenv(f"FALLBACK_{name}", secret)
    monkeypatch.setenv("FALLBACK_SOLAPI_API_KEY", "key")
    monkeypatch.setenv("FALLBACK_SOLAPI_API_SECRET", "s")
    settings = load_settings()
    assert settings.sinks == expected
    assert settings.delivers is (expected != (Sink.KAFKA,))


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("kafka,nhn", "only delivering sinks"),
        ("nhn,nhn", "listed twice"),
        ("nhn,sens", "unknown sink 'sens'"),
        (" , ", "expected kafka, nhn, solapi"),
    ],
)
def test_a_bad_sink_list_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    monkeypatch.setenv("FALLBACK_SINK", value)
    with pytest.raises(ConfigError, match=f"FALLBACK_SINK.*{said}"):
        load_settings()


def test_solapi_needs_its_keys_and_reads_its_secret_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FALLBACK_SINK", "solapi")
    with pytest.raises(ConfigError, match="FALLBACK_SOLAPI_API_KEY"):
        load_settings()
    monkeypatch.setenv("FALLBACK_SOLAPI_API_KEY", "NCSKEY")
    with pytest.raises(ConfigError, match="FALLBACK_SOLAPI_API_SECRET"):
        load_settings()
    secret = tmp_path / "secret"
    secret.write_text("from-the-file\n")
    monkeypatch.setenv("FALLBACK_SOLAPI_API_SECRET_FILE", str(secret))
    hook = tmp_path / "hook"
    hook.write_text("shared\n")
    monkeypatch.setenv("FALLBACK_SOLAPI_WEBHOOK_SECRET_FILE", str(hook))
    settings = load_settings()
    api = settings.solapi()
    assert (api.api_key, api.api_secret.get_secret_value()) == ("NCSKEY", "from-the-file")
    assert (api.base_url, api.batch_max) == ("https://api.solapi.com", 1000)
    assert settings.solapi_webhook() == "shared"
    monkeypatch.setenv("FALLBACK_PROCESSING_GUARANTEE", "exactly-once")
    with pytest.raises(ConfigError, match="FALLBACK_SINK=solapi cannot be combined"):
        load_settings()


def test_settings_is_not_a_module_global() -> None:
    import service.config as config

    assert not any(isinstance(v, Settings) for v in vars(config).values())


def test_charset_and_max_age_reach_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from service.core.text import Charset

    assert load_settings().policy().charset is Charset.CP949
    assert load_settings().policy().max_age is None
    monkeypatch.setenv("FALLBACK_CHARSET", "EUC-KR")
    monkeypatch.setenv("FALLBACK_MAX_AGE", "1h30m")
    policy = load_settings().policy()
    assert policy.charset is Charset.EUC_KR
    assert policy.max_age == timedelta(minutes=90)


def test_unknown_variables_are_named() -> None:
    from service.config import unknown_variables

    environ = {
        "FALLBACK_SMS_MAX_BYTE": "80",  # a typo of FALLBACK_SMS_MAX_BYTES
        "FALLBACK_SMS_MAX_BYTES": "80",
        "fallback_group_id": "g",  # any case is read
        "FALLBACK_TEST_REQUIRE_KAFKA": "1",  # the test harness's own
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == ["FALLBACK_SMS_MAX_BYTE"]
