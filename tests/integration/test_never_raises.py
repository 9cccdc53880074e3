"""Every public hot-path method swallows our failures: garbage in never becomes an exception out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from judgeval_async import Tracer


class Hostile:
    """An object whose every dunder used by serializers raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __iter__(self) -> Any:
        raise RuntimeError("iter")

    def __len__(self) -> int:
        raise RuntimeError("len")


def test_public_methods_never_raise_on_garbage(make_tracer: Callable[..., Tracer]) -> None:
    """tag, async_evaluate, set_attribute/input/output and health never raise, inside or outside a span."""
    tracer = make_tracer()
    garbage: list[Any] = [None, 0, Hostile(), [Hostile()], {"k": Hostile()}, b"\xff", "\ud800", float("nan")]
    for inside in (False, True):
        ctx = tracer.span("s") if inside else None
        if ctx is not None:
            ctx.__enter__()
        for g in garbage:
            tracer.tag(g)
            tracer.tag([g, g])
            tracer.async_evaluate(g, g)
            tracer.async_evaluate(scorer="x", example=g, scorers=[g], model=g, eval_name=g, threshold=g)
            tracer.set_attribute("k", g)
            tracer.set_attribute(g, g)
            tracer.set_input(g)
            tracer.set_output(g)
        if ctx is not None:
            ctx.__exit__(None, None, None)
    assert isinstance(tracer.get_health_metrics(), dict)
    assert tracer.force_flush(timeout=10.0)
    assert tracer.get_health_metrics()["ledger_balanced"]


def test_observe_with_hostile_arguments_and_results(make_tracer: Callable[..., Tracer]) -> None:
    """Observed functions taking and returning hostile objects behave exactly as untraced ones."""
    tracer = make_tracer()
    h = Hostile()

    @tracer.observe
    def sync_fn(x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    @tracer.observe(name=None, span_type="tool")
    async def async_fn(x: Any) -> Any:
        return x

    assert sync_fn(h, h, k=h) is h
    assert asyncio.run(async_fn(h)) is h
    assert tracer.force_flush(timeout=10.0)
    assert tracer.get_health_metrics()["spans_exported"] == 2


def test_blocking_calls_refuse_to_run_on_the_sdk_loop(make_tracer: Callable[..., Tracer]) -> None:
    """force_flush/shutdown called on the SDK's own loop thread raise a clear RuntimeError instead of deadlocking."""
    tracer = make_tracer()

    async def call_blocking() -> list[str]:
        errors = []
        for fn in (tracer.force_flush, tracer.shutdown):
            try:
                fn(timeout=1.0)
            except RuntimeError as exc:
                errors.append(str(exc))
        return errors

    assert tracer._runtime.ensure_started(wait=10.0)
    errors = tracer._runtime.run(call_blocking(), timeout=10.0)
    assert len(errors) == 2 and all("deadlock" in e for e in errors)
