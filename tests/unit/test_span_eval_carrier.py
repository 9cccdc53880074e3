"""Unit tests for eval_transport="span": the knob, and the judgment.pending_trace_eval JSON carried on a span."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from judgeval_async import Config, ConfigError
from judgeval_async._metrics import SignalLedger
from judgeval_async._routes import eval_transport
from judgeval_async._span_evals import PENDING_TRACE_EVAL, SPAN_EVALS_MAX, SpanEvalCarrier

# judgeval 1.6.0 (judgeval/trace/base_tracer.py, BaseTracer.async_evaluate): the keys of one list entry.
_JUDGEVAL_ENTRY_KEYS = {"project_id", "eval_name", "judges", "examples", "is_offline", "is_behavior"}
_JUDGEVAL_EXAMPLE_KEYS = {"example_id", "created_at", "trace_id", "span_id"}


class _Span:
    """The OpenTelemetry Span API surface the carrier uses: set_attribute only."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


def _run(judge: str = "faithfulness", example: object = None, *, eval_name: str = "ignored") -> dict[str, Any]:
    return {
        "project_name": "p",
        "eval_name": eval_name,
        "trace_id": "0" * 31 + "1",
        "trace_span_id": "0" * 15 + "2",
        "examples": [json.dumps({"input": "q", "actual_output": "a"} if example is None else example)],
        "judgment_scorers": [{"score_type": judge, "name": judge, "threshold": 0.5}],
        "custom_scorers": [],
        "model": None,
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def test_default_is_auto_and_each_value_is_accepted() -> None:
    """eval_transport defaults to "auto"; "api" and "span" are accepted by keyword and from JUDGMENT_EVAL_TRANSPORT."""
    assert Config().eval_transport == "auto"
    for value in ("api", "span", "auto"):
        assert Config(eval_transport=value).eval_transport == value  # type: ignore[arg-type]
        assert Config.from_env({"JUDGMENT_EVAL_TRANSPORT": value}).eval_transport == value


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "span"),  # spans to the Judgment API
        ({"otlp_endpoint": "https://api.example.com/otel/v1/traces/"}, "span"),  # api_url's own traces URL
        ({"otlp_endpoint": "https://collector.example.com/v1/traces"}, "api"),  # a third party ignores it
        ({"eval_transport": "api"}, "api"),
        ({"eval_transport": "span", "otlp_endpoint": "https://collector.example.com/v1/traces"}, "span"),
    ],
)
def test_auto_resolves_to_span_only_when_spans_go_to_judgment(options: dict[str, Any], expected: str) -> None:
    """ "auto" means "span" when spans go to the Judgment API and "api" otherwise; an explicit value is kept."""
    config = Config(api_url="https://api.example.com", api_key="k", **options)
    assert eval_transport(config) == expected


@pytest.mark.parametrize("value", ["SPAN", "otlp", "", None, 1])
def test_invalid_eval_transport_names_the_field(value: object) -> None:
    """Anything but "auto"/"api"/"span" raises ConfigError naming eval_transport."""
    with pytest.raises(ConfigError, match=r"^eval_transport: "):
        Config(eval_transport=value)  # type: ignore[arg-type]


def test_entry_matches_judgeval_wire_format() -> None:
    """One call gives a one-entry JSON list with judgeval's keys, the example merged with its ids, flags false."""
    ledger = SignalLedger("evaluations")
    span = _Span()
    assert SpanEvalCarrier(ledger).attach(span, "proj-1", _run(), named=False) is None
    entries = json.loads(span.attributes[PENDING_TRACE_EVAL])
    assert len(entries) == 1
    entry = entries[0]
    assert set(entry) == _JUDGEVAL_ENTRY_KEYS
    assert entry["project_id"] == "proj-1"
    assert entry["eval_name"] == "async_evaluate_faithfulness_0"  # judgeval's default name, index from 0
    assert entry["judges"] == [{"name": "faithfulness"}]
    assert entry["is_offline"] is False and entry["is_behavior"] is False
    (example,) = entry["examples"]
    assert set(example) == {"input", "actual_output"} | _JUDGEVAL_EXAMPLE_KEYS
    assert example["trace_id"] == "0" * 31 + "1" and example["span_id"] == "0" * 15 + "2"
    assert example["created_at"] == "2026-01-01T00:00:00+00:00"


def test_several_calls_on_one_span_make_one_list() -> None:
    """Three calls on one span: one attribute, a three-entry list, default names indexed 0..2, distinct ids."""
    span = _Span()
    carrier = SpanEvalCarrier(SignalLedger("evaluations"))
    for judge in ("a", "b", "c"):
        assert carrier.attach(span, "proj-1", _run(judge), named=False) is None
    entries = json.loads(span.attributes[PENDING_TRACE_EVAL])
    assert [e["eval_name"] for e in entries] == ["async_evaluate_a_0", "async_evaluate_b_1", "async_evaluate_c_2"]
    assert len({e["examples"][0]["example_id"] for e in entries}) == 3


def test_given_name_and_non_dict_example() -> None:
    """A given eval_name is kept; an example that is not an object is carried under "example"."""
    span = _Span()
    carried = SpanEvalCarrier(SignalLedger("evaluations")).attach(
        span, "proj-1", _run(example="just text", eval_name="mine"), named=True
    )
    assert carried is None
    (entry,) = json.loads(span.attributes[PENDING_TRACE_EVAL])
    assert entry["eval_name"] == "mine"
    assert entry["examples"][0]["example"] == "just text"


def test_ledger_settles_each_carried_evaluation_delivered() -> None:
    """Each carried evaluation is created and settled delivered in the evaluations ledger: it balances."""
    ledger = SignalLedger("evaluations")
    carrier = SpanEvalCarrier(ledger)
    for _ in range(5):
        carrier.attach(_Span(), "proj-1", _run(), named=False)
    assert (ledger.created, ledger.delivered, ledger.in_flight) == (5, 5, 0)


def test_caps_refuse_instead_of_growing() -> None:
    """Past SPAN_EVALS_MAX entries or the size cap, attach returns False (the API sends it) and counts nothing."""
    ledger = SignalLedger("evaluations")
    carrier = SpanEvalCarrier(ledger)
    span = _Span()
    for _ in range(SPAN_EVALS_MAX):
        assert carrier.attach(span, "proj-1", _run(), named=False) is None
    before = span.attributes[PENDING_TRACE_EVAL]
    assert carrier.attach(span, "proj-1", _run(), named=False) == "span_full"
    assert span.attributes[PENDING_TRACE_EVAL] == before
    big = _Span()
    huge = {"input": "x" * 600_000}
    assert carrier.attach(big, "proj-1", _run(example=huge), named=False) is None
    assert carrier.attach(big, "proj-1", _run(example=huge), named=False) == "span_full"  # 2 x 600 kB > 1 MiB
    assert len(big.attributes[PENDING_TRACE_EVAL]) < 1 << 20
    assert ledger.created == ledger.delivered == SPAN_EVALS_MAX + 1


def test_no_project_id_refuses() -> None:
    """Without a resolved project id the carrier refuses (the caller falls back to the API transport)."""
    span = _Span()
    assert SpanEvalCarrier(SignalLedger("evaluations")).attach(span, None, _run(), named=False) == "no_project_id"
    assert PENDING_TRACE_EVAL not in span.attributes


class _SlottedSpan:
    """Like the span engine's record: __slots__ without __weakref__, attributes readable through a mapping."""

    __slots__ = ("_attrs",)

    def __init__(self) -> None:
        self._attrs: dict[str, Any] = {}

    def set_attribute(self, key: str, value: Any) -> None:
        self._attrs[key] = value

    @property
    def attributes(self) -> MappingProxyType[str, Any]:
        return MappingProxyType(self._attrs)


def test_span_without_weak_references_keeps_the_list_in_its_attribute() -> None:
    """A slotted span (no weak references) gets the same list: appended to its own attribute, names indexed."""
    ledger = SignalLedger("evaluations")
    carrier = SpanEvalCarrier(ledger)
    span, other = _SlottedSpan(), _SlottedSpan()
    for judge in ("a", "b", "c"):
        assert carrier.attach(span, "proj-1", _run(judge), named=False) is None
    other_run = _run("z") | {"trace_span_id": "0" * 15 + "3"}
    assert carrier.attach(other, "proj-1", other_run, named=False) is None
    entries = json.loads(span.attributes[PENDING_TRACE_EVAL])
    assert [e["eval_name"] for e in entries] == ["async_evaluate_a_0", "async_evaluate_b_1", "async_evaluate_c_2"]
    assert all(set(e) == _JUDGEVAL_ENTRY_KEYS for e in entries)
    assert [e["eval_name"] for e in json.loads(other.attributes[PENDING_TRACE_EVAL])] == ["async_evaluate_z_0"]
    assert ledger.created == ledger.delivered == 4


def test_span_without_weak_references_or_attributes_is_refused() -> None:
    """A span type with neither weak references nor an attributes mapping: refused (the API sends it), not counted."""

    class SlottedSpan:
        __slots__ = ("value",)

        def set_attribute(self, key: str, value: Any) -> None:
            self.value = value

    ledger = SignalLedger("evaluations")
    assert SpanEvalCarrier(ledger).attach(SlottedSpan(), "proj-1", _run(), named=False) == "span_not_trackable"
    assert ledger.created == 0


@pytest.mark.timeout(30)
def test_reentry_from_a_signal_handler_goes_by_the_api_instead_of_deadlocking() -> None:
    """An attach re-entered on its own thread (a signal handler) returns "reentrant" at once; both are accounted."""
    ledger = SignalLedger("evaluations")
    carrier = SpanEvalCarrier(ledger)
    inner: list[str | None] = []

    class _Interrupted(_Span):
        def set_attribute(self, key: str, value: Any) -> None:
            if not inner:  # the "signal" lands while the outer attach holds the carrier's lock
                inner.append(carrier.attach(_Span(), "proj-1", _run("inner"), named=False))
            super().set_attribute(key, value)

    span = _Interrupted()
    assert carrier.attach(span, "proj-1", _run("outer"), named=False) is None
    assert inner == ["reentrant"]  # the caller sends that one by the API transport
    assert [e["judges"] for e in json.loads(span.attributes[PENDING_TRACE_EVAL])] == [[{"name": "outer"}]]
    assert carrier.attach(_Span(), "proj-1", _run(), named=False) is None  # the flag was cleared


def _judgeval_example(example: object, carried: dict[str, Any]) -> dict[str, Any]:
    """judgeval 1.6's example entry for ``example``: the dict merge, with the ids the carrier chose."""
    fields = example if type(example) is dict else {"example": example}
    ids = {k: carried[k] for k in ("example_id", "created_at", "trace_id", "span_id")}
    return {**fields, **ids}


@pytest.mark.parametrize(
    "example",
    [
        {"input": "q", "actual_output": "a"},
        {},
        {"input": 'ünï \u2028 "quoted" \\ ', "n": [1, 2.5, None, True], "nested": {"a": {"b": []}}},
        {"trace_id": "the user's", "x": 1, "example_id": "theirs"},  # judgeval's keys win, in the user's order
        {"note": 'mentions "span_id" inside a value'},
        ["a", 1],
        "just text",
        42,
        [],
    ],
)
def test_entry_equals_judgevals_dict_merge_for_every_example_shape(example: object) -> None:
    """The entry spliced from the example's text decodes to exactly judgeval's {**example, ids} (order included)."""
    span = _Span()
    assert SpanEvalCarrier(SignalLedger("evaluations")).attach(span, "p", _run(example=example), named=False) is None
    (entry,) = json.loads(span.attributes[PENDING_TRACE_EVAL])
    (carried,) = entry["examples"]
    expected = _judgeval_example(example, carried)
    assert carried == expected
    assert list(carried) == list(expected)
    assert list(entry) == ["project_id", "eval_name", "judges", "examples", "is_offline", "is_behavior"]
    assert (carried["trace_id"], carried["span_id"]) == ("0" * 31 + "1", "0" * 15 + "2")


def test_example_ids_are_uuid4_text_without_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    """example_id is a distinct version-4 UUID text, made without os.urandom (it releases the GIL on the caller)."""
    import os
    import uuid

    def no_urandom(n: int) -> bytes:
        raise AssertionError("os.urandom called on the caller")

    monkeypatch.setattr(os, "urandom", no_urandom)
    span = _Span()
    carrier = SpanEvalCarrier(SignalLedger("evaluations"))
    for _ in range(50):
        assert carrier.attach(span, "p", _run(), named=False) is None
    monkeypatch.undo()
    ids = [e["examples"][0]["example_id"] for e in json.loads(span.attributes[PENDING_TRACE_EVAL])]
    assert len(set(ids)) == 50
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
