"""Unit tests for judgeval_async._serialize: bounded, never-raising JSON conversion of user values."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import itertools
import json
import logging
import pathlib
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from judgeval_async._introspection import read_items
from judgeval_async._serialize import (
    DEGRADE_REASONS,
    RateLimitedLog,
    SerializeLimits,
    bounded_text,
    bounded_texts,
    json_text,
    safe_data,
    safe_json,
    utc_now_iso,
)

LIMITS = SerializeLimits()
ROOMY = SerializeLimits(max_length=10**9, max_items=10**9, max_depth=1000, budget=3600.0)


def convert(value: Any, limits: SerializeLimits = LIMITS) -> tuple[str, Counter[str]]:
    """safe_json plus the reasons it reported (as a Counter, so "reported once" is checkable)."""
    reasons: Counter[str] = Counter()
    text = safe_json(value, limits, lambda r: reasons.update([r]))
    assert isinstance(text, str)
    text.encode("utf-8")  # the output is always valid UTF-8
    return text, reasons


# ------------------------------------------------------------------ plain values
@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, "hi", [], {}, [1, "a", None], {"a": {"b": [1, 2]}}],
)
def test_plain_json_values_round_trip(value: Any) -> None:
    """JSON-native values come back unchanged and report nothing."""
    text, reasons = convert(value)
    assert json.loads(text) == value
    assert not reasons


def test_tuples_and_sets_become_lists() -> None:
    """Tuples, sets and frozensets serialize as JSON arrays."""
    text, reasons = convert({"t": (1, 2), "s": {3}, "f": frozenset({4})})
    assert json.loads(text) == {"t": [1, 2], "s": [3], "f": [4]}
    assert not reasons


def test_non_string_keys_are_stringified() -> None:
    """Mapping keys that are not strings become their str()."""
    assert json.loads(convert({1: "a", (2, 3): "b", None: "c"})[0]) == {"1": "a", "(2, 3)": "b", "None": "c"}


@pytest.mark.parametrize(("value", "expected"), [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_non_finite_floats_become_strings(value: float, expected: str) -> None:
    """NaN and infinities are not valid JSON numbers, so they become strings."""
    text, _ = convert([value])
    assert json.loads(text) == [expected]
    assert "NaN" not in text
    assert "Infinity" not in text


def test_huge_int_becomes_a_string() -> None:
    """An int outside the 64-bit range is carried as (a prefix of) its decimal string."""
    text, _ = convert({"n": 2**100})
    assert json.loads(text) == {"n": str(2**100)}


def test_enormous_int_degrades_only_itself() -> None:
    """An int beyond Python's int->str digit limit degrades to a marker without losing its siblings."""
    text, _ = convert({"ok": 1, "big": 10**5000})
    assert json.loads(text)["ok"] == 1


class Color(enum.Enum):
    RED = "red"
    ONE = 1


class Flag(enum.IntEnum):
    A = 7


def test_enums_serialize_as_their_value() -> None:
    """Enum members become their value."""
    assert json.loads(convert([Color.RED, Color.ONE, Flag.A])[0]) == ["red", 1, 7]


@dataclasses.dataclass
class Point:
    x: int
    y: Any = None


def test_dataclasses_become_objects() -> None:
    """Dataclass instances become JSON objects of their fields."""
    text, reasons = convert({"p": Point(1, Point(2))})
    assert json.loads(text) == {"p": {"x": 1, "y": {"x": 2, "y": None}}}
    assert not reasons


def test_dataclass_class_degrades_only_itself() -> None:
    """A dataclass type passed as an argument becomes "<type>" without losing its siblings."""
    text, reasons = convert({"schema": Point, "q": "hello"})
    assert json.loads(text) == {"schema": "<type>", "q": "hello"}
    assert reasons == {"unserializable": 1}


@pytest.mark.parametrize(("value", "n"), [(b"abc", 3), (bytearray(10), 10), (memoryview(b"12345"), 5), (b"", 0)])
def test_bytes_become_a_length_marker(value: Any, n: int) -> None:
    """Binary values are summarised, never decoded."""
    assert json.loads(convert(value)[0]) == f"<bytes len={n}>"


# ------------------------------------------------------------------ degradations
class Opaque:
    pass


def test_unserializable_object_becomes_type_marker() -> None:
    """An arbitrary object becomes "<TypeName>" and reports unserializable once."""
    text, reasons = convert({"a": Opaque(), "b": [Opaque(), object()]})
    assert json.loads(text) == {"a": "<Opaque>", "b": ["<Opaque>", "<object>"]}
    assert reasons == {"unserializable": 1}


def test_cyclic_list_and_dict() -> None:
    """A container that contains itself becomes "<cycle>" at the repeat and reports cyclic once."""
    lst: list[Any] = [1]
    lst.append(lst)
    d: dict[str, Any] = {"k": 1}
    d["self"] = d
    d["lst"] = lst
    text, reasons = convert(d)
    assert json.loads(text) == {"k": 1, "self": "<cycle>", "lst": [1, "<cycle>"]}
    assert reasons == {"cyclic": 1}


def test_shared_but_acyclic_references_are_not_cycles() -> None:
    """The same list referenced twice (a DAG, not a cycle) is serialized twice."""
    shared = [1, 2]
    text, reasons = convert({"a": shared, "b": shared})
    assert json.loads(text) == {"a": [1, 2], "b": [1, 2]}
    assert not reasons


def test_cyclic_dataclass() -> None:
    """A dataclass that refers to itself is cut at the cycle."""
    p = Point(1)
    p.y = p
    text, reasons = convert(p)
    assert json.loads(text) == {"x": 1, "y": "<cycle>"}
    assert reasons == {"cyclic": 1}


def test_hundred_megabyte_string_is_truncated_fast() -> None:
    """A 100 MB string is cut to at most max_length characters plus a marker, quickly, reporting truncated once."""
    big = "x" * 100_000_000
    t0 = time.perf_counter()
    text, reasons = convert(big)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0  # generous: the slice copies only what is kept
    value = json.loads(text)
    assert len(value) <= LIMITS.max_length + 64
    assert value.startswith("x" * 1000)
    kept = value.index("…")
    assert value[kept:] == f"…[truncated {100_000_000 - kept} chars]"
    assert reasons == {"truncated": 1}


def test_many_long_strings_stay_bounded() -> None:
    """Many long strings together stay within a small multiple of max_length."""
    limits = SerializeLimits(max_length=1000)
    text, reasons = convert(["y" * 5000 for _ in range(50)], limits)
    assert len(text) < 4 * limits.max_length
    assert reasons["truncated"] == 1


def test_small_values_survive_next_to_a_huge_one() -> None:
    """A huge argument does not hide the small ones next to it."""
    text, _ = convert({"big": "x" * 1_000_000, "small": "keep me", "n": 5})
    data = json.loads(text)
    assert data["small"] == "keep me"
    assert data["n"] == 5


@pytest.mark.parametrize("s", ["\ud800", "a\udfffb", "ok \U0001f600 \ud83d"])
def test_lone_surrogates_give_valid_utf8(s: str) -> None:
    """Lone surrogates are replaced so the output encodes to UTF-8."""
    text, _ = convert({s: [s]})
    text.encode("utf-8")
    assert "\ud800" not in text
    assert "\udfff" not in text


def test_valid_astral_characters_are_kept() -> None:
    """Properly paired characters outside the BMP survive unchanged."""
    assert json.loads(convert("smile \U0001f600")[0]) == "smile \U0001f600"


def test_deep_nesting_is_cut() -> None:
    """Nesting beyond max_depth becomes a type marker and reports too_deep."""
    value: Any = "leaf"
    for _ in range(50):
        value = [value]
    text, reasons = convert(value, SerializeLimits(max_depth=5))
    data = json.loads(text)
    for _ in range(5):
        data = data[0]
    assert data == "<list>"
    assert reasons == {"too_deep": 1}


def test_very_deep_nesting_never_recurses_out() -> None:
    """Nesting far beyond Python's recursion limit still returns (cut by max_depth)."""
    value: Any = []
    for _ in range(100_000):
        value = [value]
    text, reasons = convert(value)
    assert reasons == {"too_deep": 1}
    assert text.startswith("[[")


def test_many_items_are_truncated() -> None:
    """More nodes than max_items are cut with a marker and report truncated."""
    text, reasons = convert(list(range(10_000)), SerializeLimits(max_items=100))
    data = json.loads(text)
    assert len(data) <= 101
    assert data[-1] == "…[truncated]"
    assert data[:50] == list(range(50))
    assert reasons == {"truncated": 1}


def test_many_dict_items_are_truncated() -> None:
    """Large mappings are cut with a marker key."""
    data = json.loads(convert({str(i): i for i in range(5000)}, SerializeLimits(max_items=10))[0])
    assert data["…"] == "[truncated]"
    assert len(data) <= 12


def test_time_budget_cuts_the_walk() -> None:
    """A zero time budget stops a large walk early and reports time_budget."""
    limits = SerializeLimits(max_length=10**9, max_items=10**9, budget=0.0)
    text, reasons = convert([[i, str(i)] for i in range(100_000)], limits)
    assert reasons["time_budget"] == 1
    assert len(json.loads(text)) < 100_000


def test_small_value_within_zero_budget_is_not_cut() -> None:
    """A value of fewer nodes than the clock-check interval is never cut for time."""
    text, reasons = convert([1, 2, 3], SerializeLimits(budget=0.0))
    assert json.loads(text) == [1, 2, 3]
    assert not reasons


def test_roomy_limits_keep_everything() -> None:
    """With generous limits a moderately large value is reproduced exactly."""
    value = {"rows": [{"i": i, "s": "v" * 10} for i in range(2000)]}
    text, reasons = convert(value, ROOMY)
    assert json.loads(text) == value
    assert not reasons


def test_each_reason_is_reported_once_per_value() -> None:
    """Several degradations in one value report each reason exactly once."""
    cyc: list[Any] = []
    cyc.append(cyc)
    deep: Any = 1
    for _ in range(20):
        deep = [deep]
    value = {"o1": Opaque(), "o2": Opaque(), "c1": cyc, "c2": cyc, "d": deep, "s": "z" * 100_000, "t": "z" * 100_000}
    _, reasons = convert(value)
    assert reasons == {"unserializable": 1, "cyclic": 1, "too_deep": 1, "truncated": 1}
    assert set(reasons) <= set(DEGRADE_REASONS)


# ------------------------------------------------------------------ hostile objects
class RaisingIter(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("iter exploded")


class RaisingMapping(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise KeyError("items exploded")


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq exploded")

    def __hash__(self) -> int:
        raise RuntimeError("hash exploded")


class RaisingStrKey:
    def __str__(self) -> str:
        raise RuntimeError("str exploded")

    def __hash__(self) -> int:
        return 1


class RaisingLenStr(str):
    def __len__(self) -> int:
        raise RuntimeError("len exploded")


class RaisingField:
    @property
    def __dataclass_fields__(self) -> Any:
        raise RuntimeError("fields exploded")


@pytest.mark.parametrize(
    "value",
    [
        RaisingIter([1, 2]),
        {"nested": RaisingIter([1])},
        RaisingMapping(a=1),
        RaisingEq(),
        [RaisingEq(), RaisingEq()],
        {RaisingStrKey(): 1},
        RaisingLenStr("abc"),
        RaisingField(),
    ],
    ids=["iter", "nested-iter", "items", "eq-hash", "eq-list", "str-key", "len-str", "dataclass-fields"],
)
def test_hostile_objects_never_raise(value: Any) -> None:
    """User objects whose dunder methods raise never make safe_json raise; they report unserializable."""
    text, reasons = convert(value)
    json.loads(text)
    assert set(reasons) <= {"unserializable"}


def test_on_degrade_not_called_for_clean_values() -> None:
    """on_degrade is optional, and is not called when nothing degraded."""
    calls: list[str] = []
    assert safe_json({"a": 1}, LIMITS, calls.append) == '{"a":1}'
    assert safe_json({"a": Opaque()}, LIMITS) == '{"a":"<Opaque>"}'
    assert calls == []


# ------------------------------------------------------------------ RateLimitedLog
def _serialize_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "judgeval_async._serialize"]


def test_rate_limited_log_once_per_key_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """Within the interval each key logs once; a different key logs independently."""
    limiter = RateLimitedLog(interval=3600.0)
    with caplog.at_level(logging.WARNING, logger="judgeval_async._serialize"):
        for i in range(100):
            limiter.warning("a", "problem a %d", i)
        limiter.warning("b", "problem b %s", "x")
        limiter.warning("b", "problem b %s", "y")
    assert _serialize_warnings(caplog) == ["problem a 0", "problem b x"]


def test_rate_limited_log_zero_interval_logs_every_time(caplog: pytest.LogCaptureFixture) -> None:
    """With a zero interval nothing is suppressed."""
    limiter = RateLimitedLog(interval=0.0)
    with caplog.at_level(logging.WARNING, logger="judgeval_async._serialize"):
        limiter.warning("k", "one")
        limiter.warning("k", "two")
    assert _serialize_warnings(caplog) == ["one", "two"]


# ------------------------------------------------------------------ no user code runs
CALLED: list[str] = []


class Spy:
    """Records every dunder a serializer might call (instead of sleeping): none of them may run."""

    def __str__(self) -> str:
        CALLED.append("__str__")
        return "spy"

    def __repr__(self) -> str:
        CALLED.append("__repr__")
        return "Spy()"

    def __iter__(self) -> Any:
        CALLED.append("__iter__")
        return iter([1])

    def __len__(self) -> int:
        CALLED.append("__len__")
        return 1

    def __getattr__(self, name: str) -> Any:
        CALLED.append(f"__getattr__({name})")
        raise AttributeError(name)


class SpyDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        CALLED.append("items")
        return super().items()

    def __iter__(self) -> Any:
        CALLED.append("dict.__iter__")
        return super().__iter__()


class SpyList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        CALLED.append("list.__iter__")
        return super().__iter__()


class SpyStr(str):
    __slots__ = ()

    def __getitem__(self, i: Any) -> Any:
        CALLED.append("str.__getitem__")
        return "?"

    def __len__(self) -> int:
        CALLED.append("str.__len__")
        return 0

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        CALLED.append("str.encode")
        return b"?"


@dataclasses.dataclass
class WithProperty:
    a: int
    b: Any = None

    @property
    def expensive(self) -> int:
        CALLED.append("property")
        return 1


@dataclasses.dataclass(slots=True)
class Slotted:
    x: int
    y: str = "s"


class ModelLike:
    """The shape of a pydantic v2 model: declared fields on the class, values in the instance __dict__."""

    __pydantic_fields__ = {"question": None, "score": None}

    def __init__(self) -> None:
        self.question = "why?"
        self.score = 0.5
        self.private_cache = "not a field"

    def __getattr__(self, name: str) -> Any:
        CALLED.append(f"__getattr__({name})")
        raise AttributeError(name)


@pytest.fixture
def no_user_code() -> Any:
    """Fails the test if any Spy-family method ran."""
    CALLED.clear()
    yield
    assert CALLED == []


def test_overridden_container_methods_are_never_called(no_user_code: None) -> None:
    """dict/list/str subclasses are read through the builtin types' own methods, never their overrides."""
    text, reasons = convert({"d": SpyDict(a=1), "l": SpyList([1, 2]), "s": SpyStr("hello")})
    assert json.loads(text) == {"d": {"a": 1}, "l": [1, 2], "s": "hello"}
    assert not reasons


def test_arbitrary_objects_are_never_asked_for_their_text(no_user_code: None) -> None:
    """An object (and a dict key) with its own __str__/__repr__/__iter__/__getattr__ becomes "<Class>" uncalled."""
    text, reasons = convert({"v": Spy(), "k": {Spy(): 1}, "t": (Spy(),)})
    assert json.loads(text) == {"v": "<Spy>", "k": {"<Spy>": 1}, "t": ["<Spy>"]}
    assert reasons == {"unserializable": 1}


def test_dataclass_fields_without_properties(no_user_code: None) -> None:
    """A dataclass keeps its fields, read from storage (slots too); properties are never evaluated."""
    text, reasons = convert({"w": WithProperty(1, [2]), "s": Slotted(3)})
    assert json.loads(text) == {"w": {"a": 1, "b": [2]}, "s": {"x": 3, "y": "s"}}
    assert not reasons


def test_model_like_objects_keep_declared_fields(no_user_code: None) -> None:
    """A pydantic-shaped model keeps its declared fields only; __getattr__ is never called."""
    text, reasons = convert(ModelLike())
    assert json.loads(text) == {"question": "why?", "score": 0.5}
    assert not reasons


def test_stdlib_scalars_render_as_text() -> None:
    """datetime, UUID, Decimal and paths (exact types: stdlib code only) render as their usual text."""
    u = uuid.UUID(int=7)
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    text, reasons = convert([when, datetime.date(2026, 1, 2), u, decimal.Decimal("1.10"), pathlib.PurePosixPath("/a")])
    assert json.loads(text) == ["2026-01-02T03:04:05+00:00", "2026-01-02", str(u), "1.10", "/a"]
    assert not reasons


def test_user_tzinfo_is_not_called() -> None:
    """A datetime with a user-defined tzinfo renders without calling it (its offset is left out)."""

    class Zone(datetime.tzinfo):
        def utcoffset(self, dt: Any) -> datetime.timedelta:
            raise RuntimeError("utcoffset")

    text, _ = convert(datetime.datetime(2026, 1, 2, tzinfo=Zone()))
    assert json.loads(text) == "2026-01-02T00:00:00"


def test_lone_surrogates_are_reported_replaced() -> None:
    """A replaced surrogate is counted once per value as "replaced"."""
    _, reasons = convert({"a\ud800": ["\udfff", "x\ud83d"]})
    assert reasons == {"replaced": 1}


def test_huge_int_marker_is_reported() -> None:
    """An int too big to format becomes a marker, counted as truncated."""
    text, reasons = convert(10**100_000)
    assert json.loads(text).startswith("<int bits=")
    assert reasons == {"truncated": 1}


def test_safe_data_is_exact_builtin_types() -> None:
    """safe_data returns only exact builtin types, so encoding it later runs no user code."""
    data = safe_data({"s": SpyStr("x"), "l": SpyList([True]), "n": Flag.A, "f": 2.5}, LIMITS)
    assert data == {"s": "x", "l": [True], "n": 7, "f": 2.5}
    assert type(data["s"]) is str and type(data["l"]) is list and type(data["n"]) is int


# ------------------------------------------------------------------ bounded_text / bounded_texts / read_items
@pytest.mark.parametrize(
    ("value", "expected", "reasons"),
    [
        ("plain", "plain", set()),
        ("x" * 300, "x" * 256, {"truncated"}),
        ("bad\ud800", "bad?", {"replaced"}),
        (7, "7", set()),
        (None, "None", set()),
        (Color.RED, "Color.RED", set()),
        (Spy(), "<Spy>", {"unserializable"}),
        (10**100_000, "<int>", {"unserializable"}),
    ],
    ids=["plain", "long", "surrogate", "int", "none", "enum", "object", "huge-int"],
)
def test_bounded_text(value: Any, expected: str, reasons: set[str]) -> None:
    """Names, keys and tags: capped without a marker, surrogates replaced, objects never asked for their text."""
    got: list[str] = []
    CALLED.clear()
    text = bounded_text(value, 256, got.append)
    assert text == expected and type(text) is str
    assert set(got) == reasons and CALLED == []


def test_read_items_stops_an_endless_iterator() -> None:
    """At most max_count items are kept and one more is read, from an endless iterator too."""
    counter = itertools.count()
    got: list[str] = []
    assert read_items(counter, 5, 3600.0, got.append) == [0, 1, 2, 3, 4]
    assert next(counter) == 6  # exactly one item past the cap was read
    assert got == ["truncated"]


def test_read_items_uses_the_base_iterator(no_user_code: None) -> None:
    """A list or dict subclass is read by list/dict's own iterator."""
    assert read_items(SpyList(["a", "b"]), 10, 3600.0) == ["a", "b"]
    assert read_items(SpyDict(k=1), 10, 3600.0) == ["k"]


def test_read_items_refuses_user_iterables(no_user_code: None) -> None:
    """A class with its own __iter__ is not iterated: None, reported unserializable."""
    got: list[str] = []
    assert read_items(Spy(), 10, 3600.0, got.append) is None
    assert got == ["unserializable"]


def test_read_items_time_budget_for_generators() -> None:
    """A generator's items are read until the time budget is spent (its body is user code)."""

    def slow() -> Any:
        while True:
            time.sleep(0.01)
            yield 1

    got: list[str] = []
    items = read_items(slow(), 1000, 0.0, got.append)
    assert items == [1]
    assert got == ["time_budget"]


def test_bounded_texts_from_a_string_or_iterable() -> None:
    """A str is one text; an iterable gives up to max_count texts; each reason is reported once."""
    got: list[str] = []
    assert bounded_texts("one", 10, 5, 1.0, got.append) == ("one",)
    assert bounded_texts(["a" * 20, "b" * 20, Spy()], 10, 5, 1.0, got.append) == ("a" * 10, "b" * 10, "<Spy>")
    assert sorted(got) == ["truncated", "unserializable"]


@pytest.mark.parametrize(
    "value",
    ["", 'ü \u2028 "q" \\', {"a": 1, "b": [1.5, None, True, "x"]}, [], {}, 0.1, -(2**63), None, [{"name": None}]],
)
def test_json_text_is_the_compact_encoders_output(value: Any) -> None:
    """json_text (one prebuilt C encoder) writes exactly what json.dumps does with compact separators."""
    assert json_text(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "values",
    [
        ["web"],
        ("a", "b", "a"),
        [],
        ["x" * 300],  # longer than the limit: cut
        ["é"],  # not ASCII: the full path
        ["t"] * 150,  # more than max_count: truncated
        ["ok", 1, None],  # not all str
    ],
)
def test_bounded_texts_fast_path_equals_the_full_path(values: Any) -> None:
    """A list or tuple of short ASCII strs is returned as a tuple at once; anything else gives what it gave before."""
    fast_reasons: list[str] = []
    full_reasons: list[str] = []
    fast = bounded_texts(values, 256, 100, 1.0, fast_reasons.append)
    full = bounded_texts(iter(values), 256, 100, 1.0, full_reasons.append)  # an iterator takes the full path
    assert fast == full and type(fast) is tuple
    assert fast_reasons == full_reasons


def test_utc_now_iso_is_datetime_isoformat_of_now() -> None:
    """utc_now_iso (date-time cached per second) parses back to an aware UTC instant between two datetime.now()s."""
    for _ in range(200):
        before = datetime.datetime.now(datetime.timezone.utc)
        text = utc_now_iso()
        after = datetime.datetime.now(datetime.timezone.utc)
        parsed = datetime.datetime.fromisoformat(text)
        assert before <= parsed <= after and parsed.utcoffset() == datetime.timedelta(0)
        assert text == parsed.isoformat()  # the same text datetime writes: microseconds only when non-zero


def test_a_huge_dict_key_is_cut_like_a_huge_value() -> None:
    """A small flat dict with a 100 k-character key takes the bounded walk: the key is cut, not written whole."""
    text, reasons = convert({"k" * 100_000: 1})
    assert len(text) < LIMITS.max_length + 100
    assert reasons["truncated"] == 1
    assert json.loads(text) == {"k" * (LIMITS.max_length // 2) + "…[truncated 83616 chars]": 1}
