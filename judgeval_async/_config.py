"""Configuration: one frozen object, every knob settable by keyword and by ``JUDGMENT_*`` environment variable.

Precedence: keyword argument > environment variable > default, for ``Config(...)``, ``Config.from_env(...)`` and
``Tracer(...)`` alike. An invalid keyword raises ``ConfigError`` (a ``ValueError``) naming the field, at construction.
An invalid environment value is logged once and the default is used instead: a typo in a deployment's environment
must not take the application down.

Environment variable for a field ``x_y`` is ``JUDGMENT_X_Y``, except the three the judgeval SDK already uses:
``JUDGMENT_API_KEY``, ``JUDGMENT_ORG_ID`` (field ``organization_id``) and ``JUDGMENT_API_URL``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

from ._errors import ConfigError
from ._retry import RetryPolicy

__all__ = ["LOOP_THREAD_NAME", "OVERFLOW_POLICIES", "Config", "env_name"]

logger = logging.getLogger(__name__)

OverflowPolicy = Literal["drop_newest", "drop_oldest"]
OVERFLOW_POLICIES: frozenset[str] = frozenset({"drop_newest", "drop_oldest"})
EvalTransport = Literal["api", "span"]
EVAL_TRANSPORTS: frozenset[str] = frozenset({"api", "span"})

# The SDK loop thread's name: _runtime names the thread, _transport recognises its log records.
LOOP_THREAD_NAME = "judgeval-async-loop"

_ENV_ALIASES = {"organization_id": "JUDGMENT_ORG_ID"}
_SECRET_FIELDS = frozenset({"api_key"})


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
    # --- span pipeline (seed Problem 6 defaults)
    max_queue_size: int = 8192
    max_export_batch_size: int = 512
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
    eval_transport: EvalTransport = "api"  # "span": evaluations ride on their span (judgment.pending_trace_eval)
    # --- tags (seed Problem 2)
    tag_flush_interval: float = 5.0
    tag_flush_traces: int = 100
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
    # --- lifecycle
    exit_timeout: float = 2.0
    metrics_enabled: bool = True
    # Chain a SIGTERM handler that flushes before the signal ends the process (see _signals, docs/deployment.md).
    install_signal_handlers: bool = True

    def __post_init__(self) -> None:
        _validate(self)

    def __repr__(self) -> str:
        # Hand-written so the key can never leak through repr(), logs or tracebacks.
        shown = ", ".join(
            f"{f.name}={'***' if f.name in _SECRET_FIELDS and getattr(self, f.name) else getattr(self, f.name)!r}"
            for f in fields(self)
        )
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
    if name in _SECRET_FIELDS:
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
    return raw


_POSITIVE_INTS = (
    "max_queue_size",
    "max_export_batch_size",
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
)
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
)
_NON_NEGATIVE_FLOATS = ("retry_wait_initial", "retry_wait_max")
_BOOLS = ("gzip", "verify_tls", "retry_testing", "metrics_enabled", "install_signal_handlers")
_STRINGS = ("api_key", "organization_id", "api_url", "project_name", "project_id", "otlp_endpoint")
# Sent as HTTP header values: a CR/LF would be header injection (httpx refuses it only at send time, on every
# send), and httpx encodes headers as ASCII. Bearer tokens and ids never need anything else.
_HEADER_VALUES = ("api_key", "organization_id", "project_id")


def _is_header_safe(value: str) -> bool:
    return all("!" <= ch <= "~" for ch in value)


def _has_space_or_control(value: str) -> bool:
    return any(ch <= " " or "\x7f" <= ch <= "\x9f" for ch in value)


def _validate(c: Config) -> None:
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
