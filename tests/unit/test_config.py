"""Unit tests for judgeval_async._config: defaults, precedence, validation and environment parsing."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import judgeval_async._config as config_module
from judgeval_async import Config, ConfigError
from judgeval_async._config import env_name

SECRET = "sk-SECRET-do-not-log"


@pytest.fixture(autouse=True)
def _fresh_warned_env() -> Iterator[None]:
    """The "warn once" set is module-global: give each test a clean one and restore it afterwards."""
    saved = set(config_module._warned_env)
    config_module._warned_env.clear()
    yield
    config_module._warned_env.clear()
    config_module._warned_env.update(saved)


@pytest.fixture(autouse=True)
def _no_judgment_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config() reads JUDGMENT_* variables: tests start from an environment without any."""
    import os

    for var in [v for v in os.environ if v.startswith("JUDGMENT_")]:
        monkeypatch.delenv(var)


def _config_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "judgeval_async._config" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------ defaults and names
def test_defaults_match_the_seed() -> None:
    """The pipeline defaults are the ones the seed problem statement specifies."""
    c = Config()
    assert c.max_queue_size == 8192
    assert c.max_export_batch_size == 512
    assert c.max_export_batch_bytes == 1_000_000
    assert c.schedule_delay == 5.0
    assert c.export_timeout == 30.0
    assert c.eval_queue_size == 1000
    assert c.tag_flush_interval == 5.0
    assert c.tag_flush_traces == 500
    assert c.metadata_max_entries == 10_000
    assert c.metadata_ttl == 3600
    assert c.exit_timeout == 2.0


def test_from_env_with_empty_environment_gives_defaults() -> None:
    """from_env({}) equals Config()."""
    assert Config.from_env({}) == Config()


@pytest.mark.parametrize(
    ("field", "var"),
    [
        ("api_key", "JUDGMENT_API_KEY"),
        ("organization_id", "JUDGMENT_ORG_ID"),
        ("api_url", "JUDGMENT_API_URL"),
        ("max_queue_size", "JUDGMENT_MAX_QUEUE_SIZE"),
        ("schedule_delay", "JUDGMENT_SCHEDULE_DELAY"),
        ("retry_testing", "JUDGMENT_RETRY_TESTING"),
    ],
)
def test_env_names(field: str, var: str) -> None:
    """Env var names follow the judgeval SDK's three names, else JUDGMENT_<FIELD>."""
    assert env_name(field) == var


def test_env_values_are_parsed_by_type() -> None:
    """Ints, floats, bools and strings are parsed from their environment variables."""
    c = Config.from_env(
        {
            "JUDGMENT_API_KEY": SECRET,
            "JUDGMENT_ORG_ID": "org-7",
            "JUDGMENT_API_URL": "http://localhost:8080",
            "JUDGMENT_MAX_QUEUE_SIZE": "16_384",
            "JUDGMENT_SCHEDULE_DELAY": " 0.25 ",
            "JUDGMENT_GZIP": "off",
            "JUDGMENT_RETRY_TESTING": "Yes",
            "JUDGMENT_SPAN_OVERFLOW": "drop_oldest",
        }
    )
    assert c.api_key == SECRET
    assert c.organization_id == "org-7"
    assert c.api_url == "http://localhost:8080"
    assert c.max_queue_size == 16384
    assert c.schedule_delay == 0.25
    assert c.gzip is False
    assert c.retry_testing is True
    assert c.span_overflow == "drop_oldest"


def test_empty_env_value_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """An empty variable counts as unset, without a warning."""
    with caplog.at_level(logging.WARNING):
        c = Config.from_env({"JUDGMENT_MAX_QUEUE_SIZE": ""})
    assert c.max_queue_size == 8192
    assert not _config_warnings(caplog)


# ------------------------------------------------------------------ precedence
def test_keyword_beats_env_beats_default() -> None:
    """Keyword > environment variable > default."""
    env = {"JUDGMENT_MAX_QUEUE_SIZE": "4096", "JUDGMENT_SCHEDULE_DELAY": "1.5"}
    c = Config.from_env(env, max_queue_size=2048)
    assert c.max_queue_size == 2048  # keyword
    assert c.schedule_delay == 1.5  # env
    assert c.export_timeout == 30.0  # default


def test_keyword_none_falls_through_to_env() -> None:
    """A keyword explicitly set to None means "not given"."""
    c = Config.from_env({"JUDGMENT_MAX_QUEUE_SIZE": "4096"}, max_queue_size=None)
    assert c.max_queue_size == 4096


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no mapping, from_env reads os.environ."""
    monkeypatch.setenv("JUDGMENT_PROJECT_NAME", "from-os-environ")
    assert Config.from_env().project_name == "from-os-environ"


# ------------------------------------------------------------------ keyword validation
_NAN = float("nan")
_INF = float("inf")

_INVALID: list[tuple[str, Any]] = [
    *[
        (f, v)
        for f in ("max_queue_size", "max_export_batch_size", "eval_queue_size", "tag_flush_traces")
        for v in (0, -1)
    ],
    *[
        (f, v)
        for f in ("metadata_max_entries", "max_depth", "max_items", "retry_attempts", "max_concurrent_requests")
        for v in (0, -1, True, 1.5, "10")
    ],
    *[
        (f, v)
        for f in ("schedule_delay", "export_timeout", "metadata_ttl", "tag_flush_interval", "exit_timeout")
        for v in (0, -1, _NAN, _INF, "5", True)
    ],
    *[(f, v) for f in ("circuit_cooldown", "read_timeout", "serialize_budget") for v in (0.0, -0.5, _NAN, _INF)],
    *[("max_retry_after", v) for v in (0, -1, _NAN, _INF, True, "60")],
    *[(f, v) for f in ("retry_wait_initial", "retry_wait_max") for v in (-1, _NAN, _INF, True, "0")],
    ("retry_wait_exp_base", 0.5),
    ("retry_wait_exp_base", "2"),
    *[(f, v) for f in ("gzip", "verify_tls", "retry_testing", "metrics_enabled") for v in (1, "true", None)],
    *[(f, v) for f in ("api_key", "organization_id", "project_name", "project_id") for v in (1, None, b"x")],
    ("span_overflow", "drop_everything"),
    ("eval_overflow", "block"),
    ("span_overflow", None),
    ("api_url", "ftp://example.com"),
    ("api_url", "not a url"),
    ("api_url", "http://"),
    ("api_url", "https://user:pw@example.com"),
    ("otlp_endpoint", "file:///tmp/x"),
    ("otlp_endpoint", "http://user@example.com/v1/traces"),
    ("api_url", "http://host:99999"),
    ("api_url", "http://host:abc"),
    ("api_url", "http://host:0"),
    ("api_url", "http://ho st"),
    ("api_url", "http://host\r\nX-Injected: 1"),
    ("api_url", "http://host/\t"),
    ("api_url", " http://host"),
    ("otlp_endpoint", "http://host:65536/v1/traces"),
    ("otlp_endpoint", "http://host/v1/traces\n"),
    ("api_key", "sk-1\r\nX-Injected: 1"),
    ("api_key", "sk 1"),
    ("api_key", "sk-\x00"),
    ("api_key", "sk-\u00e9"),
    ("organization_id", "org\nX-Injected: 1"),
    ("organization_id", "org\x7f"),
    ("project_id", "p1\r\n"),
]


@pytest.mark.parametrize(("field", "value"), _INVALID, ids=lambda x: repr(x)[:30])
def test_invalid_keyword_raises_naming_the_field(field: str, value: Any) -> None:
    """An invalid keyword value raises ConfigError (a ValueError) whose message starts with the field name."""
    with pytest.raises(ValueError, match=rf"^{field}: ") as info:
        Config(**{field: value})
    assert isinstance(info.value, ConfigError)
    assert info.value.field == field


@pytest.mark.parametrize(("field", "value"), _INVALID[:12], ids=lambda x: repr(x)[:30])
def test_invalid_keyword_through_from_env_raises(field: str, value: Any) -> None:
    """from_env raises for invalid keywords too: only environment values degrade quietly."""
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        Config.from_env({}, **{field: value})


@pytest.mark.parametrize("value", [_NAN, _INF, True])
def test_retry_wait_exp_base_rejects_non_finite_and_bool(value: Any) -> None:
    """retry_wait_exp_base must be a finite number >= 1, not NaN, inf or a bool."""
    with pytest.raises(ConfigError, match=r"^retry_wait_exp_base: "):
        Config(retry_wait_exp_base=value)


def test_batch_larger_than_queue_is_rejected() -> None:
    """max_export_batch_size may not exceed max_queue_size."""
    with pytest.raises(ConfigError, match=r"^max_export_batch_size: "):
        Config(max_queue_size=100, max_export_batch_size=200)
    assert Config(max_queue_size=100, max_export_batch_size=100).max_export_batch_size == 100


def test_project_name_or_id_is_required() -> None:
    """An empty project_name is fine only when project_id is set."""
    with pytest.raises(ConfigError, match=r"^project_name: "):
        Config(project_name="")
    assert Config(project_name="", project_id="p1").project_id == "p1"


def test_unknown_keyword_is_rejected_by_name() -> None:
    """from_env refuses an unknown field and names it."""
    with pytest.raises(ConfigError, match=r"^max_queue_sise: ") as info:
        Config.from_env({}, max_queue_sise=10)
    assert info.value.field == "max_queue_sise"


def test_valid_edge_values_are_accepted() -> None:
    """Boundary values that are valid are accepted: 1, tiny floats, zero waits, base 1, http scheme."""
    c = Config(
        max_queue_size=1,
        max_export_batch_size=1,
        schedule_delay=1e-6,
        retry_wait_initial=0,
        retry_wait_max=0.0,
        retry_wait_exp_base=1,
        api_url="http://127.0.0.1:9",
        otlp_endpoint="https://collector.example/v1/traces",
    )
    assert c.traces_url == "https://collector.example/v1/traces"


def test_traces_url_default_derives_from_api_url() -> None:
    """Without otlp_endpoint, traces go to {api_url}/otel/v1/traces."""
    assert Config(api_url="http://h:1/").traces_url == "http://h:1/otel/v1/traces"


def test_retry_policy_mirrors_config() -> None:
    """Config.retry_policy carries the retry knobs and uses export_timeout as the deadline."""
    p = Config(retry_attempts=7, export_timeout=12.0, retry_wait_initial=0.1, retry_testing=True).retry_policy
    assert (p.attempts, p.timeout, p.wait_initial, p.testing) == (7, 12.0, 0.1, True)


def test_url_credentials_are_not_echoed_in_errors() -> None:
    """A URL rejected for its scheme never echoes the password it embeds."""
    with pytest.raises(ConfigError) as info:
        Config(api_url="ftp://user:hunter2@example.com")
    assert "hunter2" not in str(info.value)


# ------------------------------------------------------------------ environment degradation
@pytest.mark.parametrize(
    ("var", "raw", "field"),
    [
        ("JUDGMENT_MAX_QUEUE_SIZE", "lots", "max_queue_size"),
        ("JUDGMENT_MAX_QUEUE_SIZE", "-5", "max_queue_size"),
        ("JUDGMENT_MAX_QUEUE_SIZE", "1e3", "max_queue_size"),
        ("JUDGMENT_SCHEDULE_DELAY", "nan", "schedule_delay"),
        ("JUDGMENT_SCHEDULE_DELAY", "inf", "schedule_delay"),
        ("JUDGMENT_EXPORT_TIMEOUT", "0", "export_timeout"),
        ("JUDGMENT_GZIP", "maybe", "gzip"),
        ("JUDGMENT_SPAN_OVERFLOW", "block", "span_overflow"),
        ("JUDGMENT_API_URL", "ftp://example.com", "api_url"),
        ("JUDGMENT_MAX_EXPORT_BATCH_SIZE", "100000", "max_export_batch_size"),
        ("JUDGMENT_MAX_EXPORT_BATCH_BYTES", "100", "max_export_batch_bytes"),
        ("JUDGMENT_MAX_EXPORT_BATCH_BYTES", "1MB", "max_export_batch_bytes"),
    ],
)
def test_bad_env_value_warns_once_and_uses_default(
    caplog: pytest.LogCaptureFixture, var: str, raw: str, field: str
) -> None:
    """A bad environment value logs one warning naming the variable and falls back to the default."""
    with caplog.at_level(logging.WARNING):
        c = Config.from_env({var: raw, "JUDGMENT_PROJECT_NAME": "still-read"})
    assert getattr(c, field) == getattr(Config(), field)
    assert c.project_name == "still-read"  # one bad variable does not discard the others
    warnings = _config_warnings(caplog)
    assert len(warnings) == 1
    assert var in warnings[0].getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = Config.from_env({var: raw})
    assert getattr(again, field) == getattr(Config(), field)
    assert not _config_warnings(caplog)


def test_keyword_overrides_a_bad_env_value_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A bad env value shadowed by a keyword is never parsed, so nothing is logged."""
    with caplog.at_level(logging.WARNING):
        c = Config.from_env({"JUDGMENT_MAX_QUEUE_SIZE": "lots"}, max_queue_size=1024)
    assert c.max_queue_size == 1024
    assert not _config_warnings(caplog)


def test_secret_never_echoed_in_env_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """The API key value appears in no log record, even when other variables are bad."""
    env = {"JUDGMENT_API_KEY": SECRET, "JUDGMENT_MAX_QUEUE_SIZE": "x", "JUDGMENT_GZIP": "x"}
    with caplog.at_level(logging.DEBUG):
        c = Config.from_env(env)
    assert c.api_key == SECRET
    assert len(_config_warnings(caplog)) == 2
    assert SECRET not in caplog.text


def test_non_string_api_key_error_does_not_echo_it() -> None:
    """A wrongly typed api_key raises without echoing the value."""
    with pytest.raises(ConfigError, match=r"^api_key: ") as info:
        Config(api_key=123456789)  # type: ignore[arg-type]
    assert "123456789" not in str(info.value)


def test_url_credentials_not_echoed_in_env_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A bad JUDGMENT_API_URL carrying credentials is refused without logging the password."""
    with caplog.at_level(logging.WARNING):
        c = Config.from_env({"JUDGMENT_API_URL": "https://user:hunter2@example.com"})
    assert c.api_url == Config().api_url
    assert len(_config_warnings(caplog)) == 1
    assert "hunter2" not in caplog.text


def test_consistent_env_pair_is_accepted(caplog: pytest.LogCaptureFixture) -> None:
    """A smaller queue with a matching smaller batch, both from the environment, is accepted without warning."""
    with caplog.at_level(logging.WARNING):
        c = Config.from_env({"JUDGMENT_MAX_QUEUE_SIZE": "256", "JUDGMENT_MAX_EXPORT_BATCH_SIZE": "128"})
    assert (c.max_queue_size, c.max_export_batch_size) == (256, 128)
    assert not _config_warnings(caplog)


def test_max_export_batch_bytes_from_keyword_and_environment() -> None:
    """max_export_batch_bytes is set by keyword or by JUDGMENT_MAX_EXPORT_BATCH_BYTES (underscores allowed); the
    keyword wins."""
    assert Config(max_export_batch_bytes=65_536).max_export_batch_bytes == 65_536
    assert Config(max_export_batch_bytes=1024).max_export_batch_bytes == 1024  # the minimum
    env = {"JUDGMENT_MAX_EXPORT_BATCH_BYTES": "262_144"}
    assert Config.from_env(env).max_export_batch_bytes == 262_144
    assert Config.from_env(env, max_export_batch_bytes=4096).max_export_batch_bytes == 4096


@pytest.mark.parametrize("value", [0, -1, 1023, True, 1.5, "1000000", None])
def test_invalid_max_export_batch_bytes_names_the_field(value: object) -> None:
    """A byte bound that is not an integer of at least 1 024 is a ConfigError (a ValueError) naming the field."""
    with pytest.raises(ValueError, match=r"^max_export_batch_bytes: must be "):
        Config(max_export_batch_bytes=value)


def test_a_queue_smaller_than_the_default_batch_still_implies_its_batch_size() -> None:
    """With the default batch at 512, a queue of 256 (keyword or environment) means batches of 256, not a
    ConfigError; an explicit larger batch is still refused."""
    assert Config(max_queue_size=256).max_export_batch_size == 256
    assert Config.from_env({"JUDGMENT_MAX_QUEUE_SIZE": "256"}).max_export_batch_size == 256
    assert Config(max_queue_size=4096).max_export_batch_size == 512
    with pytest.raises(ConfigError, match=r"^max_export_batch_size: "):
        Config(max_queue_size=256, max_export_batch_size=512)


def test_env_value_conflicting_with_keyword_degrades(caplog: pytest.LogCaptureFixture) -> None:
    """An env batch size larger than a keyword queue size falls back with a warning instead of raising."""
    with caplog.at_level(logging.WARNING):
        c = Config.from_env({"JUDGMENT_MAX_EXPORT_BATCH_SIZE": "1000"}, max_queue_size=500)
    assert c.max_queue_size == 500
    assert c.max_export_batch_size <= 500


# ------------------------------------------------------------------ repr and immutability
def test_repr_hides_the_api_key() -> None:
    """repr(Config) masks the key but still shows other fields."""
    text = repr(Config(api_key="sk-SECRET", organization_id="org1"))
    assert "sk-SECRET" not in text
    assert "api_key='***'" in text or "api_key=***" in text
    assert "org1" in text


def test_str_and_format_hide_the_api_key() -> None:
    """str() and f-string formatting go through the same masked repr."""
    c = Config(api_key="sk-SECRET")
    assert "sk-SECRET" not in str(c)
    assert "sk-SECRET" not in f"{c}"
    assert "sk-SECRET" not in f"{c!r}"


def test_config_is_frozen() -> None:
    """Assigning to a field raises FrozenInstanceError."""
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.max_queue_size = 1  # type: ignore[misc]


def test_config_has_slots() -> None:
    """Config uses __slots__ (no per-instance __dict__)."""
    assert not hasattr(Config(), "__dict__")


def test_replace_revalidates() -> None:
    """dataclasses.replace goes through the same validation."""
    with pytest.raises(ConfigError, match=r"^max_queue_size: "):
        dataclasses.replace(Config(), max_queue_size=0)


# ------------------------------------------------------------------ Config(...) reads the environment
def test_config_constructor_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config(...) itself reads JUDGMENT_* for knobs not given as keywords, as the README promises."""
    monkeypatch.setenv("JUDGMENT_MAX_QUEUE_SIZE", "4096")
    monkeypatch.setenv("JUDGMENT_API_KEY", SECRET)
    monkeypatch.setenv("JUDGMENT_MAX_RETRY_AFTER", "5")
    c = Config(schedule_delay=1.5)
    assert c.max_queue_size == 4096
    assert c.api_key == SECRET
    assert c.max_retry_after == 5.0
    assert c.schedule_delay == 1.5


def test_config_constructor_keyword_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyword given to Config(...) wins over its environment variable, positionally too."""
    monkeypatch.setenv("JUDGMENT_API_KEY", "from-env")
    monkeypatch.setenv("JUDGMENT_ORG_ID", "org-env")
    assert Config(api_key="kw").api_key == "kw"
    c = Config("positional")
    assert (c.api_key, c.organization_id) == ("positional", "org-env")
    with pytest.raises(TypeError):
        Config("a", api_key="b")


def test_config_constructor_degrades_on_bad_env(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad variable read by Config(...) is logged once and left at its default; it never raises."""
    monkeypatch.setenv("JUDGMENT_MAX_QUEUE_SIZE", "lots")
    monkeypatch.setenv("JUDGMENT_API_KEY", "bad\x01key")
    with caplog.at_level(logging.WARNING):
        c = Config()
    assert c.max_queue_size == 8192
    assert c.api_key == ""
    assert len(_config_warnings(caplog)) == 2
    assert "bad\x01key" not in caplog.text


def test_config_constructor_agrees_with_from_env_and_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config(), Config.from_env() and from_env(os.environ) agree; replace() keeps every field it is given."""
    monkeypatch.setenv("JUDGMENT_MAX_QUEUE_SIZE", "256")
    c = Config()
    assert c == Config.from_env() == Config.from_env(dict(__import__("os").environ))
    assert c.max_export_batch_size == 256  # a small queue implies small batches, from the environment too
    monkeypatch.setenv("JUDGMENT_MAX_QUEUE_SIZE", "128")
    assert dataclasses.replace(c, gzip=False).max_queue_size == 256
    assert Config.from_env({}).max_queue_size == 8192  # an explicit mapping is the only source


def test_unknown_keyword_to_config_names_the_field() -> None:
    """Config(...) refuses an unknown knob with a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"^max_retry_afterr: "):
        Config(max_retry_afterr=1)  # type: ignore[call-arg]


# ------------------------------------------------------------------ max_retry_after, URLs and header values
def test_max_retry_after_default_and_env() -> None:
    """max_retry_after defaults to 60 s and is settable by JUDGMENT_MAX_RETRY_AFTER."""
    assert Config().max_retry_after == 60.0
    assert Config.from_env({"JUDGMENT_MAX_RETRY_AFTER": "2.5"}).max_retry_after == 2.5


@pytest.mark.parametrize(
    ("field", "value", "secret"),
    [
        ("api_key", "sk-hunter2\r\nX-Injected: 1", "hunter2"),
        ("organization_id", "org-hunter2\nX: 1", "hunter2"),
        ("api_url", "http://host:hunter2", "hunter2"),
        ("api_url", "http://hunter2 .example", "hunter2"),
    ],
)
def test_bad_header_or_url_is_refused_without_echo(field: str, value: str, secret: str) -> None:
    """Control characters, spaces and bad ports raise ConfigError naming the field, never echoing the value."""
    with pytest.raises(ConfigError, match=rf"^{field}: ") as info:
        Config(**{field: value})
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1", "https://h:65535/base", "http://[::1]:8080", "https://api.example.com/"]
)
def test_valid_ports_and_hosts_are_accepted(url: str) -> None:
    """Ports 1-65535, IPv6 literals and no port at all are accepted."""
    assert Config(api_url=url).api_url == url


def test_env_value_with_surrounding_whitespace_is_trimmed() -> None:
    """A key read from the environment with a trailing newline (a file's last line) is trimmed, not refused."""
    assert Config.from_env({"JUDGMENT_API_KEY": SECRET + "\n"}).api_key == SECRET


def test_config_signature_lists_every_knob() -> None:
    """Reading the environment does not hide the knobs from help() and run-time introspection."""
    import inspect

    params = inspect.signature(Config).parameters
    assert list(params) == [f.name for f in dataclasses.fields(Config)]
    assert params["max_retry_after"].default == 60.0


# ---------------------------------------------------------------- OpenTelemetry knobs (issue 11)


@pytest.fixture(autouse=True)
def _fresh_warned_entries() -> Iterator[None]:
    """The "bad key=value entry, warn once" set is module-global too."""
    saved = set(config_module._warned_entries)
    config_module._warned_entries.clear()
    yield
    config_module._warned_entries.clear()
    config_module._warned_entries.update(saved)


def test_semconv_default_keyword_and_env() -> None:
    """semconv defaults to judgment+openinference; a keyword list or JUDGMENT_SEMCONV (comma list) selects."""
    assert Config.from_env(environ={}).semconv == ("judgment", "openinference")
    assert Config.from_env(environ={}, semconv=["gen_ai", "judgment", "gen_ai"]).semconv == ("gen_ai", "judgment")
    env = {"JUDGMENT_SEMCONV": " OpenInference , gen_ai "}
    assert Config.from_env(environ=env).semconv == ("openinference", "gen_ai")


@pytest.mark.parametrize("bad", [(), ("judgment", "zipkin"), (1,), 5])
def test_semconv_invalid_keyword_names_the_field(bad: Any) -> None:
    """An empty, unknown or non-string semconv raises ConfigError naming semconv."""
    with pytest.raises(ConfigError, match="semconv"):
        Config.from_env(environ={}, semconv=bad)


def test_semconv_invalid_env_is_logged_and_defaulted(caplog: pytest.LogCaptureFixture) -> None:
    """A bad JUDGMENT_SEMCONV is logged once and the default is kept."""
    with caplog.at_level(logging.WARNING):
        c = Config.from_env(environ={"JUDGMENT_SEMCONV": "judgment,nope"})
    assert c.semconv == ("judgment", "openinference")
    assert any("JUDGMENT_SEMCONV" in r.getMessage() for r in _config_warnings(caplog))


def test_otlp_headers_keyword_is_validated_and_read_only() -> None:
    """otlp_headers takes a dict of token -> printable value; the config keeps a read-only copy."""
    given = {"Authorization": "Basic abc=", "x-langfuse-ingestion-version": "4"}
    c = Config.from_env(environ={}, otlp_headers=given)
    given["extra"] = "later"
    assert dict(c.otlp_headers) == {"Authorization": "Basic abc=", "x-langfuse-ingestion-version": "4"}
    with pytest.raises(TypeError):
        c.otlp_headers["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    "headers",
    [{"bad name": "v"}, {"": "v"}, {"k": "line\r\nInjected: 1"}, {"k": 5}, {3: "v"}, ["k=v"], {"k": "caf\u00e9"}],
)
def test_otlp_headers_invalid_keyword_names_the_field_without_the_value(headers: Any) -> None:
    """A bad header name or value raises ConfigError naming otlp_headers; the value (a secret) is never echoed."""
    with pytest.raises(ConfigError, match="otlp_headers") as info:
        Config.from_env(environ={}, otlp_headers=headers)
    assert "Injected" not in str(info.value)


def test_otlp_headers_from_env_per_signal_wins_and_is_percent_decoded() -> None:
    """OTEL_EXPORTER_OTLP_TRACES_HEADERS wins over OTEL_EXPORTER_OTLP_HEADERS; values are percent-decoded,
    names lower-cased, and a keyword replaces the environment entirely."""
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=generic",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Basic%20dXNlcjpwYXNz , X-Tenant = a%2Cb,",
    }
    assert dict(Config.from_env(environ=env).otlp_headers) == {
        "authorization": "Basic dXNlcjpwYXNz",
        "x-tenant": "a,b",
    }
    assert dict(Config.from_env(environ={"OTEL_EXPORTER_OTLP_HEADERS": "api-key=generic"}).otlp_headers) == {
        "api-key": "generic"
    }
    assert dict(Config.from_env(environ=env, otlp_headers={"k": "v"}).otlp_headers) == {"k": "v"}


def test_otlp_headers_bad_env_entries_skipped_and_logged_once_without_values(caplog: pytest.LogCaptureFixture) -> None:
    """Malformed members (no '=', bad name, CR/LF after decoding) are skipped; one warning, no secret in it."""
    raw = f"good=1,novalue,bad name=x,inj=a%0D%0Ab,secret={SECRET}"
    with caplog.at_level(logging.WARNING):
        c = Config.from_env(environ={"OTEL_EXPORTER_OTLP_TRACES_HEADERS": raw})
        Config.from_env(environ={"OTEL_EXPORTER_OTLP_TRACES_HEADERS": raw})
    assert dict(c.otlp_headers) == {"good": "1", "secret": SECRET}
    warnings = _config_warnings(caplog)
    assert len(warnings) == 1
    assert "OTEL_EXPORTER_OTLP_TRACES_HEADERS" in warnings[0].getMessage()
    assert "a\r\nb" not in caplog.text and "novalue" not in caplog.text


def test_otlp_header_values_never_in_repr() -> None:
    """repr(Config) shows header names, never their values."""
    c = Config.from_env(environ={}, otlp_headers={"authorization": SECRET})
    assert SECRET not in repr(c)
    assert "authorization" in repr(c)


def test_resource_attributes_keyword_validated() -> None:
    """resource_attributes takes str keys and str/bool/int/float values; otherwise ConfigError naming the field."""
    c = Config.from_env(environ={}, resource_attributes={"team": "a", "n": 3, "ratio": 0.5, "on": True})
    assert dict(c.resource_attributes) == {"team": "a", "n": 3, "ratio": 0.5, "on": True}
    for bad in ({1: "x"}, {"": "x"}, {"k": None}, {"k": {"nested": 1}}, {"k": 2**70}, "team=a"):
        with pytest.raises(ConfigError, match="resource_attributes"):
            Config.from_env(environ={}, resource_attributes=bad)


def test_mapping_fields_are_not_read_from_judgment_env() -> None:
    """JUDGMENT_OTLP_HEADERS / JUDGMENT_RESOURCE_ATTRIBUTES are not variables of ours (the OTel ones are)."""
    env = {"JUDGMENT_OTLP_HEADERS": "a=b", "JUDGMENT_RESOURCE_ATTRIBUTES": "c=d"}
    c = Config.from_env(environ=env)
    assert dict(c.otlp_headers) == {} and dict(c.resource_attributes) == {}


def test_evaluations_enabled_keyword_and_env() -> None:
    """evaluations_enabled defaults to True; JUDGMENT_EVALUATIONS_ENABLED=false turns it off; must be a bool."""
    assert Config.from_env(environ={}).evaluations_enabled is True
    assert Config.from_env(environ={"JUDGMENT_EVALUATIONS_ENABLED": "false"}).evaluations_enabled is False
    with pytest.raises(ConfigError, match="evaluations_enabled"):
        Config.from_env(environ={}, evaluations_enabled="no")


def test_config_with_mapping_fields_stays_hashable_and_comparable() -> None:
    """Mapping fields are excluded from the hash; equal configs still compare equal."""
    a = Config.from_env(environ={}, otlp_headers={"k": "v"})
    b = Config.from_env(environ={}, otlp_headers={"k": "v"})
    assert a == b
    assert hash(a) == hash(b)
