"""The hostile-input table: every hostile value, through every public surface, against the local server.

Per case: nothing raises, the caller's time is bounded (a hostile method that sleeps ``SLEEP`` seconds would blow
the bound if we called it), and after a flush the ledger balances, each item is delivered or dropped for the
expected reason, the degradation is counted (``values_degraded``) and what went on the wire is bounded.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

SLEEP = 3.0  # what a hostile method costs if we call it: far above CALLER_BOUND, so a call cannot go unnoticed
CALLER_BOUND = 1.0  # generous: the cases take milliseconds; before the fix the sleeping ones took 3-9 s
WIRE_BOUND = 1_000_000  # bytes decoded by the server per case: every cap is far below this
# In an expected-reasons set: cut by size ("truncated") or, on a loaded machine, by the time budget first.
CUT = "truncated|time_budget"


NAPPED: list[str] = []  # the threads a hostile method ran on: must stay empty (the SDK loop's above all)


def _nap() -> None:
    NAPPED.append(threading.current_thread().name)
    time.sleep(SLEEP)


# ------------------------------------------------------------------ hostile objects
class Sleeper:
    """Every dunder a serializer might call sleeps, then answers plausibly."""

    def __str__(self) -> str:
        _nap()
        return "sleeper"

    def __repr__(self) -> str:
        _nap()
        return "Sleeper()"

    def __format__(self, spec: str) -> str:
        _nap()
        return "sleeper"

    def __iter__(self) -> Iterator[str]:
        _nap()
        return iter(["a"])

    def __len__(self) -> int:
        _nap()
        return 1

    def __bool__(self) -> bool:
        _nap()
        return True

    def __eq__(self, other: object) -> bool:
        _nap()
        return False

    def __hash__(self) -> int:
        _nap()
        return 1

    def __getattr__(self, name: str) -> Any:
        _nap()
        raise AttributeError(name)

    def __index__(self) -> int:
        _nap()
        return 1

    def __float__(self) -> float:
        _nap()
        return 1.0

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() falls back to obj.__class__
        _nap()
        return Sleeper


class Raiser:
    """Every dunder a serializer might call raises (``__getattr__`` with a non-AttributeError)."""

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __bool__(self) -> bool:
        raise RuntimeError("bool")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        return 1

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"getattr {name}")


class SleepyGetattribute:
    """Any attribute access at all sleeps."""

    def __getattribute__(self, name: str) -> Any:
        _nap()
        return object.__getattribute__(self, name)


class SleepyDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        _nap()
        return super().items()

    def keys(self) -> Any:
        _nap()
        return super().keys()

    def __iter__(self) -> Any:
        _nap()
        return super().__iter__()

    def __len__(self) -> int:
        _nap()
        return super().__len__()


class SleepyList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        _nap()
        return super().__iter__()

    def __len__(self) -> int:
        _nap()
        return super().__len__()

    def __getitem__(self, i: Any) -> Any:
        _nap()
        return super().__getitem__(i)


class SleepyStr(str):
    __slots__ = ()

    def __str__(self) -> str:
        _nap()
        return "s"

    def __len__(self) -> int:
        _nap()
        return 1

    def __getitem__(self, i: Any) -> Any:
        _nap()
        return "s"

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        _nap()
        return b"s"

    def isascii(self) -> bool:
        _nap()
        return True


class SleepyKey:
    """A dict key with a fast hash whose text and equality are slow."""

    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        _nap()
        return self is other

    def __str__(self) -> str:
        _nap()
        return "key"

    def __repr__(self) -> str:
        _nap()
        return "key"


@dataclass
class Doc:
    """A dataclass with a slow property beside its fields: the fields are kept, the property never called."""

    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        _nap()
        return self.text


class FakeModel:
    """Shaped like a pydantic v2 model: declared fields in ``__pydantic_fields__``, values in ``__dict__``."""

    __pydantic_fields__ = {"question": None, "answer": None}

    def __init__(self, question: str, answer: str) -> None:
        self.question = question
        self.answer = answer

    def __getattr__(self, name: str) -> Any:
        _nap()
        raise AttributeError(name)

    def __repr__(self) -> str:
        _nap()
        return "FakeModel()"


class RaisingScorer:
    """A scorer whose every attribute lookup raises (issue 9: this call vanished from every count)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")


class NamedScorer:
    """A plain scorer object whose name is whatever the case gives."""

    score_type = "custom"

    def __init__(self, name: Any) -> None:
        self.name = name


class SleepyScorer:
    name = "sleepy"
    score_type = "faithfulness"

    @property
    def threshold(self) -> float:
        _nap()
        return 0.7

    def __getattr__(self, name: str) -> Any:
        _nap()
        raise AttributeError(name)


def _nested(depth: int, make: Callable[[Any], Any]) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = make(value)
    return value


def _cyclic_list() -> list[Any]:
    v: list[Any] = [1]
    v.append(v)
    return v


def _cyclic_dict() -> dict[str, Any]:
    v: dict[str, Any] = {"k": 1}
    v["self"] = v
    return v


def _slow_generator() -> Iterator[str]:
    for i in itertools.count():
        time.sleep(0.002)
        yield f"t{i}"


# Built once per module: the 100 MB and 1 M-key values cost more to make than any case costs to run.
_BIG: dict[str, Any] = {}


def _big(name: str) -> Any:
    if name not in _BIG:
        _BIG[name] = {
            "str": lambda: "x" * 100_000_000,
            "bytes": lambda: b"x" * 100_000_000,
            "dict": lambda: {f"k{i}": i for i in range(1_000_000)},
            "list": lambda: [f"t{i}" for i in range(5_000_000)],
        }[name]()
    return _BIG[name]


# name -> (factory, reasons expected in values_degraded when the value is serialized as a whole)
VALUES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "control-dict": (lambda: {"q": "hello", "n": [1, 2]}, set()),
    "str-100MB": (lambda: _big("str"), {"truncated"}),
    "bytes-100MB": (lambda: _big("bytes"), set()),
    "list-10k-deep": (lambda: _nested(10_000, lambda v: [v]), {"too_deep"}),
    "dict-10k-deep": (lambda: _nested(10_000, lambda v: {"k": v}), {"too_deep"}),
    "cyclic-list": (_cyclic_list, {"cyclic"}),
    "cyclic-dict": (_cyclic_dict, {"cyclic"}),
    "raising-dunders": (Raiser, {"unserializable"}),
    "sleeping-dunders": (Sleeper, {"unserializable"}),
    "sleeping-getattribute": (SleepyGetattribute, {"unserializable"}),
    "dict-subclass-sleeping-items": (lambda: SleepyDict(a=1, b=[2]), set()),
    "list-subclass-sleeping-iter": (lambda: SleepyList([1, "two"]), set()),
    "str-subclass-sleeping-methods": (lambda: SleepyStr("abc"), set()),
    "dict-key-sleeping-str-eq": (lambda: {SleepyKey(): 1}, {"unserializable"}),
    "dict-key-raising-hash-free-str": (lambda: {Raiser(): 1}, {"unserializable"}),
    "lone-surrogates": (lambda: {"k\udc80": "bad\ud800x"}, {"replaced"}),
    "int-10**100000": (lambda: 10**100_000, {"truncated"}),
    "dict-1M-keys": (lambda: _big("dict"), {CUT}),
    "infinite-iterator": (itertools.count, {"unserializable"}),
    "dataclass-sleeping-property": (lambda: Doc("hi", {"a": 1}), set()),
    "model-sleeping-getattr": (lambda: FakeModel("q?", "a!"), set()),
}


@dataclass(frozen=True)
class Case:
    surface: str
    value: str
    make: Callable[[], Any]
    reasons: set[str]  # expected keys of values_degraded, exactly
    drops: dict[str, str] = dataclasses.field(default_factory=dict)  # signal -> the reason its one item drops for

    @property
    def id(self) -> str:
        return f"{self.surface}:{self.value}"


# Surfaces that serialize a whole value as bounded JSON.
WHOLE = ("observe-arg", "observe-return", "set_attribute-value", "set_output", "evaluate-example")
# Surfaces that take a name-like text: only scalars have text; anything else becomes "<ClassName>".
NAMES = ("set_attribute-key", "span-name", "observe-name", "tag-element", "scorer-name")
NAME_VALUES: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "str-100MB": (lambda: _big("str"), {"truncated"}),
    "lone-surrogate": (lambda: "na\ud800me", {"replaced"}),
    "sleeping-dunders": (Sleeper, {"unserializable"}),
    "raising-dunders": (Raiser, {"unserializable"}),
    "str-subclass-sleeping-methods": (lambda: SleepyStr("abc"), set()),
    "int-10**100000": (lambda: 10**100_000, {"unserializable"}),
}

CASES: list[Case] = [Case(s, n, make, reasons) for s in WHOLE for n, (make, reasons) in VALUES.items()]
CASES += [Case(s, n, make, reasons) for s in NAMES for n, (make, reasons) in NAME_VALUES.items()]
CASES += [
    # tag() arguments: read at most tag_max_per_trace (+1) items, whatever the iterable.
    Case("tag", "itertools.count", itertools.count, {CUT}),
    Case("tag", "infinite-generator", lambda: (f"t{i}" for i in itertools.count()), {CUT}),
    Case("tag", "slow-generator", _slow_generator, {"time_budget"}),
    Case("tag", "list-5M", lambda: _big("list"), {"truncated"}),
    Case("tag", "dict-1M-keys", lambda: _big("dict"), {"truncated"}),
    Case("tag", "list-subclass-sleeping-iter", lambda: SleepyList(["a", "b"]), set()),
    Case("tag", "sleeping-dunders", Sleeper, {"unserializable"}, {"tags": "serialization_error"}),
    Case("tag", "raising-dunders", Raiser, {"unserializable"}, {"tags": "serialization_error"}),
    # async_evaluate() scorers: never run the scorer's code; every call is counted.
    Case("scorer", "getattr-raises", RaisingScorer, set()),
    Case("scorer", "sleeping-property-and-getattr", SleepyScorer, set()),
    Case("scorer", "dict-1M-keys", lambda: _big("dict"), {CUT}),
    Case("scorers", "itertools.repeat", lambda: itertools.repeat("faithfulness"), {"truncated"}),
    Case("scorers", "sleeping-dunders", Sleeper, {"unserializable"}),
    Case("threshold", "sleeping-dunders", Sleeper, {"unserializable"}),
    Case("threshold", "int-10**100000", lambda: 10**100_000, {"unserializable"}),
    Case("eval_name", "str-100MB", lambda: _big("str"), {"truncated"}),
    Case("model", "sleeping-dunders", Sleeper, {"unserializable"}),
]


def _drive(tracer: Tracer, surface: str, value: Any) -> None:
    """Feed ``value`` to ``surface`` the way an application would."""
    if surface == "observe-arg":

        @tracer.observe
        def takes(x: Any) -> str:
            return "ok"

        assert takes(value) == "ok"
    elif surface == "observe-return":

        @tracer.observe
        def gives() -> Any:
            return value

        assert gives() is value
    elif surface == "observe-name":

        @tracer.observe(name=value)
        def named() -> int:
            return 1

        assert named() == 1
    elif surface == "span-name":
        with tracer.span(value):
            pass
    else:
        with tracer.span("hostile"):
            if surface == "set_attribute-value":
                tracer.set_attribute("k", value)
            elif surface == "set_attribute-key":
                tracer.set_attribute(value, 1)
            elif surface == "set_output":
                tracer.set_output(value)
            elif surface == "evaluate-example":
                tracer.async_evaluate("faithfulness", value)
            elif surface == "tag-element":
                tracer.tag(["ok", value])
            elif surface == "tag":
                tracer.tag(value)
            elif surface == "scorer-name":
                tracer.async_evaluate(NamedScorer(value), {"q": "x"})
            elif surface == "scorer":
                tracer.async_evaluate(value, {"q": "x"})
            elif surface == "scorers":
                tracer.async_evaluate("faithfulness", {"q": "x"}, scorers=value)
            elif surface == "threshold":
                tracer.async_evaluate("faithfulness", {"q": "x"}, threshold=value)
            elif surface == "eval_name":
                tracer.async_evaluate("faithfulness", {"q": "x"}, eval_name=value)
            elif surface == "model":
                tracer.async_evaluate("faithfulness", {"q": "x"}, model=value)
            else:  # pragma: no cover - a typo in the table
                raise AssertionError(surface)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalJudgmentServer]:
    """One local server for the whole table (records are reset per case)."""
    with LocalJudgmentServer() as srv:
        yield srv
    _BIG.clear()


@pytest.fixture
def tracer(server: LocalJudgmentServer) -> Iterator[Tracer]:
    """A fresh tracer per case, so its counters are the case's own."""
    server.reset_records()
    t = Tracer(
        project_name="hostile",
        api_key=server.api_key,
        organization_id=server.org_id,
        api_url=server.url,
        retry_testing=True,
        schedule_delay=0.05,
        tag_flush_interval=0.05,
    )
    yield t
    t.shutdown(timeout=5.0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tracer: Tracer, server: LocalJudgmentServer) -> None:
    """The hostile value never raises, never holds the caller, and is delivered bounded, counted, ledger balanced."""
    value = case.make()
    NAPPED.clear()
    t0 = time.perf_counter()
    _drive(tracer, case.surface, value)
    elapsed = time.perf_counter() - t0
    assert elapsed < CALLER_BOUND, f"the caller was held {elapsed:.2f} s"

    assert tracer.force_flush(timeout=10.0)
    assert NAPPED == [], "a hostile method ran (on these threads)"
    health = tracer.get_health_metrics()
    assert health["ledger_balanced"]
    assert health["calls_ignored"] == {}
    got = set(health["values_degraded"])
    if CUT in case.reasons:
        cut = {"truncated", "time_budget"}
        assert got & cut and got - cut == case.reasons - {CUT}, got
    else:
        assert got == case.reasons
    ledgers = {
        "spans": (health["spans_created"], health["spans_exported"], health["spans_dropped_by_reason"]),
        "evaluations": (
            health["evaluations_enqueued"],
            health["evaluations_delivered"],
            health["evaluations_dropped_by_reason"],
        ),
        "tags": (health["tags_buffered"], health["tags_flushed"], health["tags_dropped_by_reason"]),
    }
    for signal, (created, delivered, dropped) in ledgers.items():
        expected_drop = case.drops.get(signal)
        if expected_drop is None:
            assert (delivered, dropped) == (created, {}), signal
        else:
            assert (delivered, dropped) == (created - 1, {expected_drop: 1}), signal
    assert health["spans_exported"] == 1
    if case.surface in ("evaluate-example", "scorer-name", "scorer", "scorers", "threshold", "eval_name", "model"):
        assert health["evaluations_delivered"] == 1
    if case.surface in ("tag", "tag-element") and not case.drops:
        assert health["tags_flushed"] == 1
    wire = sum(server.bytes_received(ep)[1] for ep in ("traces", "evals", "tags_batch", "tags"))
    assert wire < WIRE_BOUND


def test_every_async_evaluate_call_is_accounted_for(tracer: Tracer) -> None:
    """Eight calls with good and bad scorers: eight evaluations in the ledger (issue: 8 calls, 7 enqueued)."""
    scorers: list[Any] = ["faithfulness", RaisingScorer(), SleepyScorer(), Raiser(), Sleeper(), {"score_type": "x"}]
    scorers += [NamedScorer(Raiser()), None]
    NAPPED.clear()
    with tracer.span("evaluated"):
        for scorer in scorers:
            tracer.async_evaluate(scorer, {"q": "x"})
    assert tracer.force_flush(timeout=10.0)
    health = tracer.get_health_metrics()
    assert health["ledger_balanced"] and NAPPED == []
    assert health["evaluations_enqueued"] == len(scorers) == 8
    assert health["evaluations_delivered"] == 8


def test_a_huge_exception_message_is_bounded(tracer: Tracer, server: LocalJudgmentServer) -> None:
    """An observed function raising with a 100 MB message: the exception propagates unchanged and the span's
    exception event (message and stack trace) is capped, counted, and delivered."""
    error = ValueError(_big("str"))

    @tracer.observe
    def fails() -> None:
        raise error

    with pytest.raises(ValueError) as caught:
        fails()
    assert caught.value is error
    assert tracer.force_flush(timeout=10.0)
    health = tracer.get_health_metrics()
    assert health["ledger_balanced"] and health["spans_exported"] == 1
    assert "truncated" in health["values_degraded"]
    assert server.bytes_received("traces")[1] < WIRE_BOUND


class Kind(str, enum.Enum):
    RELEVANCE = "answer_relevancy"


class ModelScorer:
    """Shaped like judgeval's pydantic scorers: declared fields, values in __dict__, a str-Enum score type."""

    __pydantic_fields__ = {"name": None, "score_type": None, "threshold": None}

    def __init__(self) -> None:
        self.name = "relevance"
        self.score_type = Kind.RELEVANCE
        self.threshold = 0.8


def test_scorer_configs_keep_stored_fields(tracer: Tracer, server: LocalJudgmentServer) -> None:
    """Scorers read without their code still send their stored name, score type (an enum's value) and threshold."""
    with tracer.span("evaluated"):
        tracer.async_evaluate(
            ModelScorer(), {"q": "x"}, scorers=["faithfulness", {"score_type": "custom", "threshold": 0.1}]
        )
    assert tracer.force_flush(timeout=10.0)
    (record,) = server.evals
    assert record.payload["judgment_scorers"] == [
        {"score_type": "answer_relevancy", "name": "relevance", "threshold": 0.8},
        {"score_type": "faithfulness", "name": "faithfulness", "threshold": 0.5},
        {"score_type": "custom", "threshold": 0.1},
    ]
    assert record.payload["examples"] == [{"q": "x"}]


def test_exception_events_match_opentelemetry(server: LocalJudgmentServer) -> None:
    """An ordinary exception is recorded with the event and attributes OpenTelemetry's record_exception gives."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = Tracer(
        project_name="hostile",
        api_key=server.api_key,
        organization_id=server.org_id,
        api_url=server.url,
        tracer_provider=provider,
    )
    try:

        @tracer.observe
        def fails() -> None:
            try:
                {}["missing"]
            except KeyError as exc:
                raise ValueError("bad input") from exc

        with pytest.raises(ValueError):
            fails()
        with provider.get_tracer("reference").start_as_current_span("reference") as reference:
            reference.record_exception(ValueError("bad input"))
        ours, theirs = (s.events[0] for s in exporter.get_finished_spans())
        assert ours.name == theirs.name == "exception"
        assert ours.attributes is not None and theirs.attributes is not None
        assert set(ours.attributes) == set(theirs.attributes)
        for key in ("exception.type", "exception.message", "exception.escaped"):
            assert ours.attributes[key] == theirs.attributes[key]
        stack = str(ours.attributes["exception.stacktrace"])
        assert stack.startswith("Traceback") and "KeyError: 'missing'" in stack
        assert stack.endswith("ValueError: bad input\n")
    finally:
        tracer.shutdown(timeout=5.0)
        provider.shutdown()
