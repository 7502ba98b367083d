"""Configuration from FALLBACK_* environment variables (contract §10): one settings class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.results import Deadlines
from service.core.rules import Limits, Policy, QuietHours, Registry, parse_duration
from service.core.text import Charset, Unencodable

ENV_PREFIX = "FALLBACK_"


class ConfigError(Exception):
    """An invalid configuration; the message names the variable."""


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class Sink(StrEnum):
    KAFKA = "kafka"
    NHN = "nhn"
    SOLAPI = "solapi"


DELIVERING = frozenset({Sink.NHN, Sink.SOLAPI})


class ProcessingGuarantee(StrEnum):
    """FALLBACK_PROCESSING_GUARANTEE (§9): acknowledged writes then a commit, or transactions."""

    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """The slice of the settings every Kafka client needs: where the brokers are and how to
    authenticate. `service.kafka.options.client_options` turns it into aiokafka's keyword
    arguments."""

    bootstrap_servers: str
    client_id: str
    security_protocol: SecurityProtocol
    sasl_mechanism: SaslMechanism
    sasl_username: str | None
    sasl_password: SecretStr | None
    ssl_cafile: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_key_password: SecretStr | None
    ssl_check_hostname: bool

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in {
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        }


@dataclass(frozen=True, slots=True)
class Pressure:
    """How hard a delivering sink may press its provider, and how long it waits for it."""

    timeout_seconds: float
    max_attempts: int
    request_deadline_seconds: float
    backoff_base_seconds: float
    backoff_max_seconds: float
    rate_limit: float
    concurrency: int
    breaker_threshold: int
    breaker_max_seconds: float


@dataclass(frozen=True, slots=True)
class NhnApi:
    """The slice of the settings the `nhn` sink needs (§10): where the API is, the keys, and
    how hard to press it."""

    base_url: str
    app_key: str
    secret_key: SecretStr
    pressure: Pressure


@dataclass(frozen=True, slots=True)
class SolapiApi:
    """The slice of the settings the `solapi` sink and its collector need (§10, §11)."""

    base_url: str
    api_key: str
    api_secret: SecretStr
    batch_max: int
    pressure: Pressure


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    """The slice of the settings the operator console needs (§12), besides the topics."""

    host: str
    port: int
    users_file: str
    secure_cookies: bool
    session_idle_seconds: float
    index_path: str
    read_budget: int


class Settings(BaseSettings):
    """Every setting of the service. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        # Each field's docstring is its description (docs/configuration.md is generated).
        use_attribute_docstrings=True,
    )

    # Kafka connection
    kafka_bootstrap_servers: str = "localhost:9092"
    """Kafka brokers, `host:port` separated by commas."""
    group_id: str = Field("fallback-service", min_length=1)
    """The consumer group; also names the internal topics (`{group_id}.dedupe`, ...)."""
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    """`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`."""
    kafka_sasl_mechanism: SaslMechanism = SaslMechanism.PLAIN
    """`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with a SASL protocol)."""
    kafka_sasl_username: str | None = None
    """SASL user name (needed with a SASL protocol)."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password (needed with a SASL protocol); never printed."""
    kafka_ssl_cafile: str | None = None
    """CA bundle (PEM) that signed the brokers' certificates; unset: the system's."""
    kafka_ssl_certfile: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    kafka_ssl_keyfile: str | None = None
    """Client private key (PEM) for mutual TLS."""
    kafka_ssl_key_password: SecretStr | None = None
    """Password of the client private key; never printed."""
    kafka_ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host connected to."""
    kafka_enable_idempotence: bool = False
    """Idempotent producers (real Kafka can; the local test broker cannot)."""
    kafka_client_id: str = "fallback-service"
    """The client id the brokers see (logs, quotas)."""
    kafka_session_timeout_ms: int = Field(10_000, ge=1000, le=3_600_000)
    """How long the group waits for a silent member before moving its partitions."""
    kafka_heartbeat_interval_ms: int = Field(3000, ge=100, le=3_600_000)
    """How often the consumer tells the group it is alive."""
    kafka_group_instance_id: str | None = Field(
        None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$"
    )
    """Static group membership (KIP-345): a name stable across restarts of this replica and
    unique among the group's replicas, such as its pod's name. A replica restarted under the
    same name gets its partitions back at once instead of after the session timeout; one that
    stops for good keeps them unread until the timeout. Unset: dynamic membership."""
    kafka_fetch_max_wait_ms: int = Field(50, ge=1, le=60_000)
    """How long the broker may hold a fetch for partitions with nothing new. The input and
    repartition partitions are fetched together, and a fetch held for quiet ones delays records
    arriving meanwhile on the others by up to this (Kafka's 500 ms default showed as p99
    latency). An idle instance sends about 1000/this fetches a second."""

    # Topics (§1)
    input_topic: str = Field("alimtalk.delivery.failed", min_length=1)
    """AlimTalk failure events (§2), keyed by fallbackId."""
    output_topic: str = Field("sms.send.requests", min_length=1)
    """SMS requests (§6) for the SMS service (sink `kafka`)."""
    events_topic: str = Field("fallback.events", min_length=1)
    """Outcome events (§7)."""
    dlq_topic: str = Field("alimtalk.delivery.failed.dlq", min_length=1)
    """Dead letters (§8)."""
    channel_settings_topic: str = Field("fallback.channel-settings", min_length=1)
    """Channel settings (§3), compacted, keyed by senderKey."""
    sender_numbers_topic: str = Field("fallback.sender-numbers", min_length=1)
    """Sender-number registry (§4), compacted, keyed by the number's digits."""
    results_topic: str = Field("sms.send.results", min_length=1)
    """Delivery results of SMS requests (§11), keyed by fallbackId; created by `topics create`
    (read once delivery results are turned on)."""
    audit_topic: str = Field("fallback.audit", min_length=1)
    """Every change an operator made through the CLI (§10), keyed by the changed table's key."""
    dedupe_topic: str | None = None
    """Internal, compacted: which fallbacks were already requested (§9). Unset:
    `{group_id}.dedupe`."""
    dedupe_retention_days: float = Field(7.0, gt=0)
    """How long a requested fallback is remembered (re-published input older than this is
    sent again)."""
    repartition_topic: str | None = None
    """Internal: events forwarded to the partition that owns their fallbackId. Unset:
    `{group_id}.repartition`."""
    internal_topic_replication: int | None = Field(None, ge=1, le=32)
    """Replication of the internal topics created at start-up. Unset: 3, or fewer when the
    cluster has fewer brokers."""

    # Conversion (§5)
    sms_max_bytes: int = Field(90, ge=1, le=100_000)
    """Longest SMS body in bytes; longer bodies become LMS."""
    lms_title_max_bytes: int = Field(40, ge=1, le=100_000)
    """Longest LMS title in bytes (cut beyond)."""
    lms_max_bytes: int = Field(2000, ge=1, le=100_000)
    """Longest LMS body in bytes (cut beyond, never inside a character)."""
    unencodable: Unencodable = Unencodable.REPLACE
    """Characters the charset cannot carry: `replace` (with `?`), `drop`, or `reject` the
    fallback."""
    charset: Charset = Charset.CP949
    """What the SMS service carries: `cp949` (all of it) or `euc-kr` (only KS X 1001)."""
    sendno_registry: Registry = Registry.ENFORCE
    """`enforce`: only ACTIVE sender numbers of the registry (§4) are used; `off`: any."""
    ad_quiet_hours: str = "21:00-08:00"
    """Korean time when advertising fallbacks are SKIPPED (`HH:MM-HH:MM`); empty: never."""
    max_age: str = ""
    """Older failures are SKIPPED `expired` (`15m`, `2h`, `1h30m`); empty: never."""

    # Consumer
    batch_max_records: int = Field(1000, ge=1, le=100_000)
    """Most input records handled as one batch (one set of writes and one commit). With the nhn
    sink it also bounds what a crash can send twice."""
    batch_timeout_ms: int = Field(50, ge=1, le=60_000)
    """Longest wait for a batch to fill."""
    shutdown_timeout_seconds: float = Field(8.0, gt=0, le=60)
    """SIGTERM: everything stops within this (the contract allows 10 s)."""

    # Guarantee (§9)
    processing_guarantee: ProcessingGuarantee = ProcessingGuarantee.AT_LEAST_ONCE
    """`at-least-once` (any Kafka-protocol broker) or `exactly-once` (transactions: Apache
    Kafka; not with the nhn sink)."""
    kafka_transaction_timeout_ms: int = Field(60_000, ge=1000, le=900_000)
    """Exactly-once: how long the broker lets a transaction stay open before aborting it."""

    # Sink (§10)
    sink: str = "kafka"
    """`kafka`: publish SMS requests to the output topic; `nhn`: send them to NHN Cloud's SMS
    API v3.0; `solapi`: to Solapi's messages API v4; several delivering sinks in order
    (`nhn,solapi`): each request to the first available one, failing over (§10)."""
    nhn_base_url: str = "https://sms.api.nhncloudservice.com"
    """nhn: the API's base URL (an NHN Cloud SMS API v3.0-compatible endpoint)."""
    nhn_app_key: str | None = None
    """nhn: the project's app key (in the URL path)."""
    nhn_secret_key: SecretStr | None = None
    """nhn: the secret key (`X-Secret-Key`); never printed."""
    nhn_secret_key_file: str | None = None
    """nhn: a file holding the secret key (a mounted Secret), read at start-up; wins over
    FALLBACK_NHN_SECRET_KEY."""
    nhn_timeout_seconds: float = Field(5.0, gt=0, le=300)
    """nhn: each HTTP call; a call that takes longer is transient trouble."""
    nhn_max_attempts: int = Field(4, ge=1, le=100)
    """nhn: attempts per request, the first included, before it is FAILED
    `provider_unavailable`."""
    nhn_request_deadline_seconds: float = Field(30.0, gt=0, le=3600)
    """nhn: all attempts of one request, back-offs included, end within this."""
    nhn_backoff_base_ms: int = Field(200, ge=1, le=60_000)
    """nhn: first back-off between attempts (doubling, full jitter)."""
    nhn_backoff_max_ms: int = Field(5000, ge=1, le=300_000)
    """nhn: longest back-off between attempts."""
    nhn_rate_limit: float = Field(300.0, ge=0, le=100_000)
    """nhn: requests per second to the API, per replica (token bucket); 0: no limit."""
    nhn_concurrency: int = Field(16, ge=1, le=1024)
    """nhn: calls in flight at once, per replica."""
    nhn_breaker_threshold: int = Field(5, ge=1, le=10_000)
    """nhn: transient failures in a row that open the circuit breaker (input paused, API
    probed)."""
    nhn_breaker_max_seconds: float = Field(30.0, gt=0, le=3600)
    """nhn: longest wait between two probes of an unavailable API."""
    solapi_base_url: str = "https://api.solapi.com"
    """solapi: the API's base URL (a Solapi messages API v4-compatible endpoint)."""
    solapi_api_key: str | None = None
    """solapi: the API key (in the signed `Authorization` header)."""
    solapi_api_secret: SecretStr | None = None
    """solapi: the API secret that signs each call; never printed."""
    solapi_api_secret_file: str | None = None
    """solapi: a file holding the API secret (a mounted Secret), read at start-up; wins over
    FALLBACK_SOLAPI_API_SECRET."""
    solapi_batch_max: int = Field(1000, ge=1, le=10_000)
    """solapi: most messages in one send-many call (Solapi takes 10,000)."""
    solapi_timeout_seconds: float = Field(10.0, gt=0, le=300)
    """solapi: each HTTP call; a call that takes longer is ambiguous and is looked up."""
    solapi_max_attempts: int = Field(4, ge=1, le=100)
    """solapi: attempts per message, the first included, before it is FAILED
    `provider_unavailable`."""
    solapi_request_deadline_seconds: float = Field(60.0, gt=0, le=3600)
    """solapi: all attempts of one call, back-offs included, end within this."""
    solapi_backoff_base_ms: int = Field(200, ge=1, le=60_000)
    """solapi: first back-off between attempts (doubling, full jitter)."""
    solapi_backoff_max_ms: int = Field(5000, ge=1, le=300_000)
    """solapi: longest back-off between attempts."""
    solapi_rate_limit: float = Field(20.0, ge=0, le=10_000)
    """solapi: calls per second to the API, per replica (each up to FALLBACK_SOLAPI_BATCH_MAX
    messages); 0: no limit."""
    solapi_concurrency: int = Field(4, ge=1, le=256)
    """solapi: calls in flight at once, per replica."""
    solapi_breaker_threshold: int = Field(5, ge=1, le=10_000)
    """solapi: transient failures in a row that open the circuit breaker."""
    solapi_breaker_max_seconds: float = Field(30.0, gt=0, le=3600)
    """solapi: longest wait between two probes of an unavailable API."""

    # Delivery results (§11)
    delivery_results: bool = False
    """`on`: read the results topic and end each requested fallback with DELIVERED,
    UNDELIVERED or EXPIRED (§7); with the nhn sink, collect NHN's results too. `off`: stop at
    REQUESTED/SENT."""
    result_deadline_sms: str = "25h"
    """An SMS with no result this long after its request is EXPIRED `no_result` (`s`, `m`, `h`,
    `d`; NHN's own limit is 25 h)."""
    result_deadline_lms: str = "80h"
    """The same for an LMS (NHN's own limit is 80 h)."""
    result_early_window: str = "10m"
    """A result for a fallback not requested yet is kept this long for its request, then counted
    `never_requested`."""
    result_sweep_seconds: float = Field(30.0, gt=0, le=60)
    """How often the owner looks for fallbacks past their deadline (EXPIRED within a minute)."""
    nhn_results_poll_seconds: float = Field(10.0, gt=0, le=3600)
    """nhn with results on: how often NHN's `message-results` is polled."""
    alert_delivery_rate: float = Field(0.9, ge=0, le=1)
    """Exported as `fallback_delivery_rate_threshold`: the shipped alert fires when the last
    hour's delivery rate falls below it."""
    nhn_webhook_signature: SecretStr | None = None
    """nhn with results on: the `X-Toast-Webhook-Signature` NHN's `MESSAGE_RESULT_UPDATE` webhook
    sends to `POST /webhooks/nhn`; unset: the webhook is refused (401)."""
    nhn_webhook_signature_file: str | None = None
    """nhn with results on: a file holding that signature (a mounted Secret); wins over
    FALLBACK_NHN_WEBHOOK_SIGNATURE."""
    solapi_results_poll_seconds: float = Field(30.0, gt=0, le=3600)
    """solapi with results on: how often Solapi's message list is polled for status changes
    (results the report webhook did not bring)."""
    solapi_webhook_secret: SecretStr | None = None
    """solapi with results on: the `X-Solapi-Secret` Solapi's report webhook sends to
    `POST /webhooks/solapi`; unset: the webhook is refused (401)."""
    solapi_webhook_secret_file: str | None = None
    """solapi with results on: a file holding that secret (a mounted Secret); wins over
    FALLBACK_SOLAPI_WEBHOOK_SECRET."""

    # Operation
    http_port: int = Field(8080, ge=0, le=65535)
    """Port of /healthz, /readyz and /metrics."""
    http_host: str = "0.0.0.0"
    """Address the HTTP server listens on."""
    log_level: str = "INFO"
    """`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."""
    log_format: LogFormat = LogFormat.TEXT
    """`text` or `json` (one object per line)."""
    log_outcomes: bool = False
    """One INFO line per outcome (fallbackId, status, masked number). Off by default: it is a
    line per SMS, and the outcome events and metrics say the same."""

    # Operator console (§12)
    console_host: str = "127.0.0.1"
    """Address `fallback-service console` listens on; loopback unless told otherwise."""
    console_port: int = Field(8081, ge=0, le=65535)
    """Port of the console."""
    console_users_file: str | None = None
    """The console's accounts, `name:role:scrypt-hash` lines (`fallback-service console
    add-user` writes them); the console refuses to start without one."""
    console_secure_cookies: bool = False
    """`true` when the console is served over HTTPS (behind a TLS proxy): session cookies get
    `Secure`."""
    console_session_minutes: float = Field(60.0, gt=0, le=24 * 60)
    """A console session ends after this many minutes without a request."""
    console_index_path: str = "console-index.sqlite"
    """The console's search index (SQLite), fed from the outcome, dead-letter and audit topics;
    rebuilt when missing or stale."""
    console_read_budget: int = Field(20_000, ge=100, le=10_000_000)
    """Records per second the console reads from Kafka at most (index and searches), so that it
    never slows the service."""
    console_index_retention_days: float = Field(7.0, gt=0)
    """Indexed fallbacks older than this are dropped (set it to the outcome topic's retention)."""

    @field_validator(
        "unencodable",
        "sendno_registry",
        "log_format",
        "processing_guarantee",
        "charset",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", "log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @field_validator("ad_quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        QuietHours.parse(value)
        return value

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("result_deadline_sms", "result_deadline_lms", "result_early_window")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) is None:
            raise ValueError("expected a duration such as 25h, 90m or 3d")
        return value

    @field_validator("delivery_results", "console_secure_cookies", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() not in {"on", "off", "true", "false"}:
            raise ValueError("expected on or off")
        return value

    @field_validator("sink", mode="before")
    @classmethod
    def _sinks(cls, value: Any) -> Any:
        if isinstance(value, Sink):
            return value.value
        if not isinstance(value, str):
            return value
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        known = {s.value for s in Sink}
        for name in names:
            if name not in known:
                raise ValueError(f"unknown sink {name!r}: expected kafka, nhn or solapi")
        if not names:
            raise ValueError("expected kafka, nhn, solapi, or delivering sinks in order")
        if len(names) > 1 and Sink.KAFKA.value in names:
            raise ValueError("only delivering sinks (nhn, solapi) can be listed for failover")
        if len(set(names)) != len(names):
            raise ValueError("a sink is listed twice")
        return ",".join(names)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """FALLBACK_SINK as a list: one sink, or delivering sinks in failover order (§10)."""
        return tuple(Sink(n) for n in self.sink.split(","))

    @property
    def delivers(self) -> bool:
        """Whether the sinks deliver themselves (nhn, solapi) rather than publish (kafka)."""
        return self.sinks[0] in DELIVERING

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.kafka().uses_sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise _NamedError(
                "kafka_sasl_username",
                "SASL needs FALLBACK_KAFKA_SASL_USERNAME and FALLBACK_KAFKA_SASL_PASSWORD",
            )
        if self.delivers and self.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
            # An HTTP call cannot join a Kafka transaction (§10).
            raise _NamedError(
                "sink",
                f"FALLBACK_SINK={self.sink} cannot be combined with "
                "FALLBACK_PROCESSING_GUARANTEE=exactly-once: an HTTP API cannot join a Kafka "
                "transaction; use at-least-once",
            )
        if Sink.NHN in self.sinks:
            if not self.nhn_app_key:
                raise _NamedError("nhn_app_key", "FALLBACK_SINK=nhn needs FALLBACK_NHN_APP_KEY")
            if not self.nhn_secret_key and not self.nhn_secret_key_file:
                raise _NamedError(
                    "nhn_secret_key",
                    "FALLBACK_SINK=nhn needs FALLBACK_NHN_SECRET_KEY "
                    "or FALLBACK_NHN_SECRET_KEY_FILE",
                )
            if not self.nhn_base_url.startswith(("http://", "https://")):
                raise _NamedError("nhn_base_url", "expected an http:// or https:// URL")
        if Sink.SOLAPI in self.sinks:
            if not self.solapi_api_key:
                raise _NamedError(
                    "solapi_api_key", "FALLBACK_SINK=solapi needs FALLBACK_SOLAPI_API_KEY"
                )
            if not self.solapi_api_secret and not self.solapi_api_secret_file:
                raise _NamedError(
                    "solapi_api_secret",
                    "FALLBACK_SINK=solapi needs FALLBACK_SOLAPI_API_SECRET "
                    "or FALLBACK_SOLAPI_API_SECRET_FILE",
                )
            if not self.solapi_base_url.startswith(("http://", "https://")):
                raise _NamedError("solapi_base_url", "expected an http:// or https:// URL")
        return self

    @property
    def dedupe_topic_name(self) -> str:
        return self.dedupe_topic or f"{self.group_id}.dedupe"

    @property
    def collects_nhn_results(self) -> bool:
        """The nhn sink with delivery results on: the service collects NHN's results (§11)."""
        return self.delivery_results and Sink.NHN in self.sinks

    @property
    def collects_solapi_results(self) -> bool:
        """The solapi sink with delivery results on: the service collects Solapi's (§11)."""
        return self.delivery_results and Sink.SOLAPI in self.sinks

    @property
    def nhn_results_topic_name(self) -> str:
        return f"{self.group_id}.nhn-results"

    @property
    def solapi_results_topic_name(self) -> str:
        return f"{self.group_id}.solapi-results"

    @property
    def repartition_topic_name(self) -> str:
        return self.repartition_topic or f"{self.group_id}.repartition"

    def kafka(self) -> KafkaConnection:
        """The connection and security options shared by every Kafka client (service, CLI, demo)."""
        return KafkaConnection(
            bootstrap_servers=self.kafka_bootstrap_servers,
            client_id=self.kafka_client_id,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
        )

    def nhn(self) -> NhnApi:
        """The `nhn` sink's slice. Reads FALLBACK_NHN_SECRET_KEY_FILE when set; raises
        ConfigError naming the variable when it cannot be read or is empty."""
        secret = _secret(self.nhn_secret_key, self.nhn_secret_key_file, "nhn_secret_key_file")
        if secret is None or not self.nhn_app_key:
            raise ConfigError(
                "invalid configuration: FALLBACK_NHN_APP_KEY and FALLBACK_NHN_SECRET_KEY are needed"
            )
        return NhnApi(
            base_url=self.nhn_base_url.rstrip("/"),
            app_key=self.nhn_app_key,
            secret_key=secret,
            pressure=Pressure(
                timeout_seconds=self.nhn_timeout_seconds,
                max_attempts=self.nhn_max_attempts,
                request_deadline_seconds=self.nhn_request_deadline_seconds,
                backoff_base_seconds=self.nhn_backoff_base_ms / 1000,
                backoff_max_seconds=self.nhn_backoff_max_ms / 1000,
                rate_limit=self.nhn_rate_limit,
                concurrency=self.nhn_concurrency,
                breaker_threshold=self.nhn_breaker_threshold,
                breaker_max_seconds=self.nhn_breaker_max_seconds,
            ),
        )

    def solapi(self) -> SolapiApi:
        """The `solapi` sink's slice. Reads FALLBACK_SOLAPI_API_SECRET_FILE when set; raises
        ConfigError naming the variable when it cannot be read or is empty."""
        secret = _secret(
            self.solapi_api_secret, self.solapi_api_secret_file, "solapi_api_secret_file"
        )
        if secret is None or not self.solapi_api_key:
            raise ConfigError(
                "invalid configuration: FALLBACK_SOLAPI_API_KEY and FALLBACK_SOLAPI_API_SECRET "
                "are needed"
            )
        return SolapiApi(
            base_url=self.solapi_base_url.rstrip("/"),
            api_key=self.solapi_api_key,
            api_secret=secret,
            batch_max=self.solapi_batch_max,
            pressure=Pressure(
                timeout_seconds=self.solapi_timeout_seconds,
                max_attempts=self.solapi_max_attempts,
                request_deadline_seconds=self.solapi_request_deadline_seconds,
                backoff_base_seconds=self.solapi_backoff_base_ms / 1000,
                backoff_max_seconds=self.solapi_backoff_max_ms / 1000,
                rate_limit=self.solapi_rate_limit,
                concurrency=self.solapi_concurrency,
                breaker_threshold=self.solapi_breaker_threshold,
                breaker_max_seconds=self.solapi_breaker_max_seconds,
            ),
        )

    def nhn_webhook(self) -> str | None:
        """The signature NHN's webhook must carry (FALLBACK_NHN_WEBHOOK_SIGNATURE or its file)."""
        found = _secret(
            self.nhn_webhook_signature,
            self.nhn_webhook_signature_file,
            "nhn_webhook_signature_file",
        )
        return found.get_secret_value() if found is not None else None

    def solapi_webhook(self) -> str | None:
        """The secret Solapi's report webhook must carry (FALLBACK_SOLAPI_WEBHOOK_SECRET or its
        file)."""
        found = _secret(
            self.solapi_webhook_secret,
            self.solapi_webhook_secret_file,
            "solapi_webhook_secret_file",
        )
        return found.get_secret_value() if found is not None else None

    def console(self) -> ConsoleOptions:
        """The console's slice; raises ConfigError naming FALLBACK_CONSOLE_USERS_FILE when it is
        not set (the console refuses to start without accounts)."""
        if not self.console_users_file:
            raise ConfigError(
                "invalid configuration: FALLBACK_CONSOLE_USERS_FILE is needed: the console "
                "serves nobody without an account (fallback-service console add-user NAME "
                "--role operator)"
            )
        return ConsoleOptions(
            host=self.console_host,
            port=self.console_port,
            users_file=self.console_users_file,
            secure_cookies=self.console_secure_cookies,
            session_idle_seconds=self.console_session_minutes * 60,
            index_path=self.console_index_path,
            read_budget=self.console_read_budget,
        )

    def deadlines(self) -> Deadlines:
        """FALLBACK_RESULT_DEADLINE_SMS and _LMS (§11)."""
        sms = parse_duration(self.result_deadline_sms)
        lms = parse_duration(self.result_deadline_lms)
        assert sms is not None and lms is not None  # the validators refuse empty ones
        return Deadlines(sms, lms)

    @property
    def early_window_ms(self) -> int:
        window = parse_duration(self.result_early_window)
        assert window is not None
        return int(window.total_seconds() * 1000)

    def policy(self) -> Policy:
        """The conversion policy these settings describe."""
        return Policy(
            limits=Limits(self.sms_max_bytes, self.lms_title_max_bytes, self.lms_max_bytes),
            unencodable=self.unencodable,
            registry=self.sendno_registry,
            quiet_hours=QuietHours.parse(self.ad_quiet_hours),
            charset=self.charset,
            max_age=parse_duration(self.max_age),
        )


def _secret(value: SecretStr | None, path: str | None, field: str) -> SecretStr | None:
    """A secret from its variable, or from the file its `…_FILE` variable names (which wins)."""
    if not path:
        return value
    variable = _variable(field)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"invalid configuration: {variable}: cannot read the file ({exc.strerror})"
        ) from None
    if not text:
        raise ConfigError(f"invalid configuration: {variable}: the file is empty")
    return SecretStr(text)


class _NamedError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _variable(field: object) -> str:
    return f"{ENV_PREFIX}{str(field).upper()}"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """FALLBACK_* variables the settings do not know: most likely typos, silently ignored."""
    known = {_variable(name) for name in Settings.model_fields}
    return sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in known
        and not name.upper().startswith(f"{ENV_PREFIX}TEST_")  # the test harness's own
    )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (and `.env`); raise ConfigError naming the variable.

    `overrides` take field names and win over the environment (tests, the dev runner).
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            context = error.get("ctx", {}).get("error")
            if isinstance(context, _NamedError):
                problems.append(f"{_variable(context.field)}: {context}")
                continue
            name = _variable(error["loc"][0]) if error["loc"] else "configuration"
            shown = (
                "" if "secret" in name.lower() or "password" in name.lower() else error.get("input")
            )
            suffix = f" (got {shown!r})" if isinstance(shown, str | int | float) else ""
            problems.append(f"{name}: {error['msg']}{suffix}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
