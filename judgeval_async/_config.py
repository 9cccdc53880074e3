"""Configuration: one frozen object, every knob settable by keyword and by ``JUDGMENT_*`` environment variable.

Precedence: keyword argument > environment variable > default, for ``Config(...)``, ``Config.from_env(...)`` and
``Tracer(...)`` alike. An invalid keyword raises ``ConfigError`` (a ``ValueError``) naming the field, at construction.
An invalid environment value is logged once and the default is used instead: a typo in a deployment's environment
must not take the application down.

Environment variable for a field ``x_y`` is ``JUDGMENT_X_Y``, except the three the judgeval SDK already uses:
``JUDGMENT_API_KEY``, ``JUDGMENT_ORG_ID`` (field ``organization_id``) and ``JUDGMENT_API_URL``, and the two mapping
fields, which follow OpenTelemetry: ``otlp_headers`` comes from ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` (else
``OTEL_EXPORTER_OTLP_HEADERS``); ``resource_attributes`` is keyword-only, merged over ``OTEL_RESOURCE_ATTRIBUTES``
and ``OTEL_SERVICE_NAME`` (:func:`resource_from_env`) when the tracer builds its resource.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import types
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

from ._errors import ConfigError
from ._retry import RetryPolicy
from ._semconv import DEFAULT_SEMCONV, SEMCONVS

__all__ = [
    "LOOP_THREAD_NAME",
    "OVERFLOW_POLICIES",
    "Config",
    "env_name",
    "parse_key_values",
    "resource_from_env",
]

logger = logging.getLogger(__name__)

OverflowPolicy = Literal["drop_newest", "drop_oldest"]
OVERFLOW_POLICIES: frozenset[str] = frozenset({"drop_newest", "drop_oldest"})
EvalTransport = Literal["auto", "api", "span"]
EVAL_TRANSPORTS: frozenset[str] = frozenset({"auto", "api", "span"})

# The SDK loop thread's name: _runtime names the thread, _transport recognises its log records.
LOOP_THREAD_NAME = "judgeval-async-loop"

_ENV_ALIASES = {"organization_id": "JUDGMENT_ORG_ID"}
_SECRET_FIELDS = frozenset({"api_key"})
# OpenTelemetry's variables for the mapping fields, highest priority first (the per-signal one wins).
_HEADERS_ENV = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
_MAPPING_FIELDS = frozenset({"otlp_headers", "resource_attributes"})


def _empty_mapping() -> Mapping[str, Any]:
    return types.MappingProxyType({})


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return _ENV_ALIASES.get(field_name, "JUDGMENT_" + field_name.upper())


class _ReadsEnvironment(type):
    """Makes ``Config(...)`` read ``JUDGMENT_*`` variables for the fields not given as keywords.

    A metaclass rather than a hand-written ``__init__``: the dataclass keeps its generated, fully typed signature
    (type checkers and IDEs see every knob), and ``dataclasses.replace`` still works (it passes every field, so the
    environment is not consulted again).
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            names = [f.name for f in fields(cast("type[Config]", cls))]
            if len(args) > len(names):
                raise TypeError(f"Config() takes at most {len(names)} positional arguments")
            for name, value in zip(names, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"Config() got multiple values for argument {name!r}")
                kwargs[name] = value
        return _build(cast("type[Config]", cls), os.environ, kwargs)


@dataclass(frozen=True, slots=True)
class Config(metaclass=_ReadsEnvironment):
    """Every size, interval, timeout and retry knob. Times are seconds (float), sizes are counts or bytes."""

    # --- identity and endpoints
    api_key: str = field(default="", repr=False)
    organization_id: str = ""
    api_url: str = "https://api.judgmentlabs.ai"
    project_name: str = "default_project"
    project_id: str = ""  # set it to skip the resolve call
    otlp_endpoint: str = ""  # full URL; default f"{api_url}/otel/v1/traces"
    # Headers for the OTLP endpoint's own backend (Phoenix, Langfuse, a collector); read-only once built. Applied by
    # the delivery pipeline's OTLP sender (issue 10/11); here: parsed and validated.
    otlp_headers: Mapping[str, str] = field(default_factory=_empty_mapping, hash=False)
    # Added to the tracer's OpenTelemetry resource, over OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
    resource_attributes: Mapping[str, Any] = field(default_factory=_empty_mapping, hash=False)
    # Which attribute conventions spans are written in: "judgment", "openinference", "gen_ai" (see _semconv).
    semconv: tuple[str, ...] = DEFAULT_SEMCONV
    # --- span pipeline (seed Problem 6 defaults)
    max_queue_size: int = 8192
    # A batch is cut at max_export_batch_size spans or max_export_batch_bytes of encoded, uncompressed OTLP, whichever
    # comes first. 1 000 000 stays under nginx's default 1 MiB body limit even when gzip gains nothing; a 413 lowers the
    # bytes bound for the rest of the process (_spans.SpanExportService). 512 spans, as OpenTelemetry's: 2 048 (fewer
    # requests) did not measurably lower the web benchmark's p99 and lengthens what a kill -9 loses while healthy.
    max_export_batch_size: int = 512
    max_export_batch_bytes: int = 1_000_000
    schedule_delay: float = 5.0
    export_timeout: float = 30.0
    span_overflow: OverflowPolicy = "drop_newest"
    max_concurrent_exports: int = 8
    gzip: bool = True
    project_resolve_wait: float = 30.0
    # --- evaluations (seed Problem 1)
    eval_queue_size: int = 1000
    eval_overflow: OverflowPolicy = "drop_oldest"
    eval_batch_size: int = 50
    # "span": evaluations ride on their span (judgment.pending_trace_eval), no request of their own; "api": one POST
    # each to the evaluation queue. "auto": "span" when spans go to the Judgment API, else "api" (_routes).
    eval_transport: EvalTransport = "auto"
    evaluations_enabled: bool = True  # False: async_evaluate() is a counted no-op (no Judgment API to take them)
    # --- tags (seed Problem 2)
    tag_flush_interval: float = 5.0
    # 500: one batch call a second at 500 tagged requests/s (100 made five, each costing the loop thread and the
    # backend a request); the time bound on a tag's wait is tag_flush_interval either way.
    tag_flush_traces: int = 500
    tag_buffer_max_traces: int = 10_000
    tag_max_per_trace: int = 100
    # --- span metadata (seed Problem 3)
    metadata_max_entries: int = 10_000
    metadata_ttl: float = 3600.0
    # --- serialization of user values
    max_value_length: int = 32_768
    max_depth: int = 8
    max_items: int = 1000
    serialize_budget: float = 0.005
    # --- transport
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    write_timeout: float = 10.0
    pool_timeout: float = 5.0
    max_concurrent_requests: int = 4
    verify_tls: bool = True
    # --- retry (stamina vocabulary)
    retry_attempts: int = 5
    retry_wait_initial: float = 0.5
    retry_wait_max: float = 10.0
    retry_wait_exp_base: float = 2.0
    retry_testing: bool = False
    circuit_cooldown: float = 60.0
    max_retry_after: float = 60.0  # a server's Retry-After is honoured up to this many seconds
    # --- delivery: memory backlog and durable spool (docs/reliability.md, "The delivery pipeline")
    backlog_max_bytes: int = 64 << 20  # encoded payloads held in memory per signal while they wait for a send
    max_item_age: float = 3600.0  # held longer than this (memory or disk): dropped "expired"
    spool: bool = True  # spill to disk when an endpoint is down or the backlog is large; persist at exit
    spool_dir: str = ""  # default: $XDG_CACHE_HOME/judgeval_async (~/.cache/judgeval_async)
    spool_max_bytes: int = 1 << 30
    # --- lifecycle
    exit_timeout: float = 2.0
    metrics_enabled: bool = True
    # Chain a SIGTERM handler that flushes before the signal ends the process (see _signals, docs/deployment.md).
    install_signal_handlers: bool = True

    def __post_init__(self) -> None:
        _normalize(self)
        _validate(self)

    def __repr__(self) -> str:
        # Hand-written so the key can never leak through repr(), logs or tracebacks.
        def show(name: str) -> str:
            value = getattr(self, name)
            if name in _SECRET_FIELDS and value:
                return "'***'"
            if name == "otlp_headers":
                return repr({k: "***" for k in value})  # header values are often credentials
            if name in _MAPPING_FIELDS:
                return repr(dict(value))
            return repr(value)

        shown = ", ".join(f"{f.name}={show(f.name)}" for f in fields(self))
        return f"Config({shown})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a config from keyword ``overrides``, then ``JUDGMENT_*`` variables (of ``environ``, default
        ``os.environ``), then defaults. A keyword given as None counts as not given."""
        env = os.environ if environ is None else environ
        return _build(cls, env, {k: v for k, v in overrides.items() if v is not None})

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy for every endpoint, bounded by ``export_timeout``."""
        return RetryPolicy(
            attempts=self.retry_attempts,
            timeout=self.export_timeout,
            wait_initial=self.retry_wait_initial,
            wait_max=self.retry_wait_max,
            wait_exp_base=self.retry_wait_exp_base,
            testing=self.retry_testing,
        )

    @property
    def traces_url(self) -> str:
        """Where OTLP/HTTP protobuf span batches go."""
        return self.otlp_endpoint or self.api_url.rstrip("/") + "/otel/v1/traces"


# The metaclass's ``__call__(*args, **kwargs)`` would hide every knob from help() and run-time introspection.
_init_signature = inspect.signature(Config.__init__)
setattr(Config, "__signature__", _init_signature.replace(parameters=list(_init_signature.parameters.values())[1:]))  # noqa: B010 - mypy does not know __signature__

_warned_env: set[str] = set()


def _plain(cls: type[Config], values: Mapping[str, Any]) -> Config:
    """The dataclass constructor itself: validation, no environment."""
    return cast(Config, type.__call__(cls, **values))


def _replace(config: Config, changes: Mapping[str, Any]) -> Config:
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    values.update(changes)
    return _plain(type(config), values)


def _build(cls: type[Config], env: Mapping[str, str], given: dict[str, Any]) -> Config:
    """Keywords ``given``, then ``JUDGMENT_*`` variables of ``env``, then defaults."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(given) - set(known)
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(name, "unknown configuration field")
    defaults = _plain(cls, {})
    from_env: dict[str, Any] = {}
    for name in known:
        if name in _MAPPING_FIELDS:
            continue
        raw = env.get(env_name(name))
        if name in given or raw is None or raw == "":
            continue
        try:
            from_env[name] = _parse_env(raw, type(getattr(defaults, name)))
        except (ValueError, TypeError):
            _log_bad_env_once(env_name(name), _shown(name, raw), getattr(defaults, name))
    # Keywords must be valid (this raises, naming the field). Environment values are then added while the
    # combination stays valid; one that does not fit is logged and left at its default: a deployment typo must
    # not take the application down.
    if "max_export_batch_size" not in given:
        # A small queue with the default batch size is a request for small batches, not an error.
        queue = given.get("max_queue_size", from_env.get("max_queue_size"))
        if isinstance(queue, int) and not isinstance(queue, bool) and 0 < queue < defaults.max_export_batch_size:
            given = {**given, "max_export_batch_size": queue}
    if "otlp_headers" not in given:
        for var in _HEADERS_ENV:
            raw = env.get(var)
            if raw is not None and raw.strip():
                from_env["otlp_headers"] = _headers_from_env(raw, var)
                break
    config = _plain(cls, given)
    if not from_env:
        return config
    try:
        return _replace(config, from_env)
    except (ValueError, TypeError):
        pass
    # Some value does not fit: add them one at a time (two passes, so a pair that is only valid together,
    # such as a smaller queue and a smaller batch, still gets in) and leave the misfits at their defaults.
    pending = dict(from_env)
    for _ in range(2):
        for name, value in list(pending.items()):
            try:
                config = _replace(config, {name: value})
            except (ValueError, TypeError):
                continue
            del pending[name]
    for name in pending:
        _log_bad_env_once(env_name(name), _shown(name, env.get(env_name(name), "")), getattr(defaults, name))
    return config


def _shown(name: str, raw: str) -> str:
    if name in _SECRET_FIELDS or name == "otlp_headers":
        return "***"
    if name in ("api_url", "otlp_endpoint"):
        return "(an invalid URL)"  # may embed credentials
    return repr(raw)


def _log_bad_env_once(var: str, shown: str, default: object) -> None:
    if var in _warned_env:
        return
    _warned_env.add(var)
    logger.warning("ignoring invalid %s=%s; using the default %r", var, shown, default)


def _parse_env(raw: str, kind: type) -> object:
    raw = raw.strip()
    if kind is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if kind is int:
        return int(raw.replace("_", ""))
    if kind is float:
        return float(raw)
    if kind is tuple:
        return tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    return raw


# ---------------------------------------------------------------- OpenTelemetry's key=value lists
# OTEL_EXPORTER_OTLP_*HEADERS and OTEL_RESOURCE_ATTRIBUTES: "k1=v1,k2=v2", W3C-baggage-like, values percent-encoded.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
_warned_entries: set[str] = set()


def _log_bad_entry_once(var: str, what: str) -> None:
    if var in _warned_entries:
        return
    _warned_entries.add(var)
    logger.warning("ignoring %s in %s (expected comma-separated key=value pairs, values percent-encoded)", what, var)


def parse_key_values(raw: str, var: str, *, secret: bool = False) -> dict[str, str]:
    """``k1=v1,k2=v2`` as a dict: keys and values trimmed and percent-decoded (UTF-8); empty members skipped. A
    malformed member (no ``=``, an empty key, bad UTF-8 after decoding, a ``;property``) is skipped, and the first
    one per variable is logged (its text only when not ``secret``). A later duplicate key wins, as in OTel."""
    out: dict[str, str] = {}
    for member in raw.split(","):
        if not member.strip():
            continue
        key, eq, value = member.partition("=")
        try:
            key = urllib.parse.unquote(key.strip(), errors="strict")
            value = urllib.parse.unquote(value.strip(), errors="strict")
        except UnicodeDecodeError:
            key = ""
        if not eq or not key or ";" in value:
            _log_bad_entry_once(var, "a malformed entry" if secret else f"the malformed entry {member.strip()!r}")
            continue
        out[key] = value
    return out


def _headers_from_env(raw: str, var: str) -> Mapping[str, str]:
    """Header pairs from ``var``, names lower-cased (as OTel Python does); invalid names or values are skipped."""
    headers: dict[str, str] = {}
    for key, value in parse_key_values(raw, var, secret=True).items():
        if _header_problem(key, value) is not None:
            _log_bad_entry_once(var, "an invalid header")
            continue
        headers[key.lower()] = value
    return headers


def resource_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The resource attributes the environment asks for: ``OTEL_RESOURCE_ATTRIBUTES``, then ``OTEL_SERVICE_NAME``
    over its ``service.name`` (the OpenTelemetry precedence). Never raises; bad entries are logged once, skipped."""
    env = os.environ if environ is None else environ
    attributes = parse_key_values(env.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES")
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attributes["service.name"] = service
    return attributes


def _header_problem(key: object, value: object) -> str | None:
    if not isinstance(key, str) or not _TOKEN.match(key):
        return "has a header name that is not an HTTP token"
    if not isinstance(value, str):
        return "has a header value that is not a string"
    # Printable ASCII plus space and tab inside (httpx encodes headers as ASCII; CR/LF would be header injection).
    if not all(" " <= ch <= "~" or ch == "\t" for ch in value):
        return "has a header value with control or non-ASCII characters"
    return None


_POSITIVE_INTS = (
    "max_queue_size",
    "max_export_batch_size",
    "max_export_batch_bytes",
    "max_concurrent_exports",
    "eval_queue_size",
    "eval_batch_size",
    "tag_flush_traces",
    "tag_buffer_max_traces",
    "tag_max_per_trace",
    "metadata_max_entries",
    "max_value_length",
    "max_depth",
    "max_items",
    "max_concurrent_requests",
    "retry_attempts",
    "backlog_max_bytes",
    "spool_max_bytes",
)
# Smaller byte bounds would send a request per span or two: that is a misconfiguration, not a request for it.
_MIN_BATCH_BYTES = 1024
_POSITIVE_FLOATS = (
    "schedule_delay",
    "export_timeout",
    "project_resolve_wait",
    "tag_flush_interval",
    "metadata_ttl",
    "serialize_budget",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "pool_timeout",
    "circuit_cooldown",
    "max_retry_after",
    "exit_timeout",
    "max_item_age",
)
_NON_NEGATIVE_FLOATS = ("retry_wait_initial", "retry_wait_max")
_BOOLS = (
    "gzip",
    "verify_tls",
    "retry_testing",
    "metrics_enabled",
    "install_signal_handlers",
    "evaluations_enabled",
    "spool",
)
_STRINGS = ("api_key", "organization_id", "api_url", "project_name", "project_id", "otlp_endpoint", "spool_dir")
# Sent as HTTP header values: a CR/LF would be header injection (httpx refuses it only at send time, on every
# send), and httpx encodes headers as ASCII. Bearer tokens and ids never need anything else.
_HEADER_VALUES = ("api_key", "organization_id", "project_id")


def _is_header_safe(value: str) -> bool:
    return all("!" <= ch <= "~" for ch in value)


def _has_space_or_control(value: str) -> bool:
    return any(ch <= " " or "\x7f" <= ch <= "\x9f" for ch in value)


def _normalize(c: Config) -> None:
    """Read-only copies of the mapping fields (a later change to the caller's dict changes nothing) and a tuple
    ``semconv``. Values that cannot be normalized are left for ``_validate`` to name."""
    for name in _MAPPING_FIELDS:
        value = getattr(c, name)
        if isinstance(value, Mapping) and not isinstance(value, types.MappingProxyType):
            object.__setattr__(c, name, types.MappingProxyType(dict(value)))
    semconv = c.semconv
    if isinstance(semconv, str):
        semconv = tuple(part.strip() for part in semconv.split(",") if part.strip())
    if isinstance(semconv, (list, tuple, frozenset, set)):
        # Duplicates removed, order kept (sets sorted, so the config is deterministic).
        items = sorted(semconv, key=str) if isinstance(semconv, (set, frozenset)) else semconv
        object.__setattr__(c, "semconv", tuple(dict.fromkeys(items)))


_INT64_RANGE = (-(2**63), 2**63)


def _resource_value_ok(value: object) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return _INT64_RANGE[0] <= value < _INT64_RANGE[1]
    return isinstance(value, float)


def _validate_mappings(c: Config) -> None:
    if not isinstance(c.otlp_headers, Mapping):
        raise ConfigError("otlp_headers", "must be a dict of header name -> value")
    for key, value in c.otlp_headers.items():
        problem = _header_problem(key, value)
        if problem is not None:
            # Only the name is echoed, and only a valid one: the value may be a credential.
            raise ConfigError("otlp_headers", problem)
    if not isinstance(c.resource_attributes, Mapping):
        raise ConfigError("resource_attributes", "must be a dict of attribute name -> value")
    for key, value in c.resource_attributes.items():
        if not isinstance(key, str) or not key:
            raise ConfigError("resource_attributes", f"keys must be non-empty strings, got {key!r}")
        if not _resource_value_ok(value):
            raise ConfigError(
                "resource_attributes", f"value of {key!r} must be a str, bool, int (64-bit) or float, got {value!r}"
            )
    semconv = c.semconv
    if not isinstance(semconv, tuple) or not semconv or not all(isinstance(n, str) for n in semconv):
        raise ConfigError("semconv", f"must be a non-empty tuple of names from {sorted(SEMCONVS)}, got {semconv!r}")
    unknown = [n for n in semconv if n not in SEMCONVS]
    if unknown:
        raise ConfigError("semconv", f"unknown convention {unknown[0]!r}; expected names from {sorted(SEMCONVS)}")


def _validate(c: Config) -> None:
    _validate_mappings(c)
    for name in _POSITIVE_INTS:
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(name, f"must be a positive integer, got {v!r}")
    for name in _POSITIVE_FLOATS:
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(name, f"must be a positive, finite number of seconds, got {v!r}")
    for name in _NON_NEGATIVE_FLOATS:
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(name, f"must be a non-negative, finite number, got {v!r}")
    base = c.retry_wait_exp_base
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base) or base < 1:
        raise ConfigError("retry_wait_exp_base", f"must be >= 1, got {c.retry_wait_exp_base!r}")
    for name in _BOOLS:
        if not isinstance(getattr(c, name), bool):
            raise ConfigError(name, f"must be a bool, got {getattr(c, name)!r}")
    for name in _STRINGS:
        if not isinstance(getattr(c, name), str):
            raise ConfigError(name, "must be a string")
    for name in _HEADER_VALUES:
        if not _is_header_safe(getattr(c, name)):
            # The value is never echoed: it may be (part of) a secret.
            raise ConfigError(name, "must contain only printable ASCII characters (no spaces or control characters)")
    if c.eval_transport not in EVAL_TRANSPORTS:
        raise ConfigError("eval_transport", f"must be one of {sorted(EVAL_TRANSPORTS)}, got {c.eval_transport!r}")
    for name in ("span_overflow", "eval_overflow"):
        if getattr(c, name) not in OVERFLOW_POLICIES:
            raise ConfigError(name, f"must be one of {sorted(OVERFLOW_POLICIES)}, got {getattr(c, name)!r}")
    if c.max_export_batch_bytes < _MIN_BATCH_BYTES:
        raise ConfigError(
            "max_export_batch_bytes", f"must be at least {_MIN_BATCH_BYTES} bytes, got {c.max_export_batch_bytes!r}"
        )
    if c.max_export_batch_size > c.max_queue_size:
        raise ConfigError("max_export_batch_size", "must not exceed max_queue_size")
    for name in ("api_url", "otlp_endpoint"):
        url = getattr(c, name)
        if name == "otlp_endpoint" and not url:
            continue
        if _has_space_or_control(url):
            # urlsplit silently strips some of these (tab, CR, LF): refuse them rather than guess what was meant.
            raise ConfigError(name, "must not contain spaces or control characters")
        try:
            parts = urllib.parse.urlsplit(url)
            hostname = parts.hostname
        except ValueError:
            raise ConfigError(name, "must be an http(s) URL") from None
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(name, "has an invalid port (expected a number in 1-65535)") from None
        if port == 0:
            raise ConfigError(name, "has an invalid port (expected a number in 1-65535)")
        if parts.username or parts.password:
            raise ConfigError(name, "must not embed credentials; use api_key")
        if parts.scheme not in ("http", "https") or not hostname:
            # Only the scheme is echoed: the rest of a URL may carry secrets.
            raise ConfigError(name, f"must be an http(s) URL, got scheme {parts.scheme!r}")
    if not c.project_name and not c.project_id:
        raise ConfigError("project_name", "project_name or project_id is required")
