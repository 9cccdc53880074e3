"""``eval_transport="span"``: evaluations ride on their span as ``judgment.pending_trace_eval`` (judgeval's format).

The caller (``Tracer.async_evaluate``) builds the run exactly as for the API transport; this module turns it into
judgeval's list entry and sets the span attribute. Nothing here runs on the loop, and nothing touches the span
pipeline: the span carries the evaluation wherever the span goes.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ._metrics import SignalLedger
from ._serialize import json_text
from ._span import EngineSpan, random_uuid

__all__ = ["PENDING_TRACE_EVAL", "SPAN_EVALS_MAX", "SPAN_EVAL_ATTRIBUTE_MAX", "SpanEvalCarrier", "judges_text"]

EvalRun = dict[str, Any]  # as built by Tracer.async_evaluate (see _evals); "examples" holds one JSON text
PENDING_TRACE_EVAL = "judgment.pending_trace_eval"
SPAN_EVALS_MAX = 100  # evaluations carried on one span; more go by the API transport
SPAN_EVAL_ATTRIBUTE_MAX = 1 << 20  # characters of the attribute's JSON text; beyond it, the API transport
_COUNTS_KEPT = 4096  # spans without weak references whose entry count is remembered
# Keys judgeval adds to each example; an example of ours that has one of them is merged as a dict (see _example).
_ADDED_KEYS = ('"example_id"', '"created_at"', '"trace_id"', '"span_id"')


def _example(text: str, added: str) -> str:
    """judgeval's ``{**example, example_id, created_at, trace_id, span_id}`` as JSON text, ``added`` being the last
    four members' text. Spliced into the example's own text (bounded JSON we just wrote: valid, compact) rather than
    parsed back and encoded again; an example that is not an object is carried under ``"example"``, as judgeval's
    own ``{**example}`` could not. Only an object already holding one of the added keys takes the dict merge, whose
    key order and last-wins values the splice would not reproduce."""
    if text.startswith("{"):
        if (
            '"example_id"' not in text
            and '"created_at"' not in text
            and '"trace_id"' not in text
            and ('"span_id"' not in text)
        ):  # the four of _ADDED_KEYS, spelled out: no generator per call
            return text[:-1] + ("," if len(text) > 2 else "") + added + "}"
        try:
            example = json.loads(text)
        except ValueError:  # pragma: no cover - the text is our own bounded JSON
            example = None
        if type(example) is dict:
            merged = json.loads("{" + added + "}")
            return json_text({**example, **merged})
    return '{"example":' + text + "," + added + "}"


def _attribute_text(span: Any) -> str | None:
    """The span's current ``judgment.pending_trace_eval`` list text ("" if none or not ours); None if unreadable."""
    if type(span) is EngineSpan:
        value = span.get_attribute(PENDING_TRACE_EVAL)  # no read-only mapping built
    else:
        attrs = getattr(span, "attributes", None)
        if not isinstance(attrs, Mapping):
            return None
        value = attrs.get(PENDING_TRACE_EVAL)
    if type(value) is str and value.startswith("[") and value.endswith("]") and len(value) > 2:
        return value
    return ""


def judges_text(judgment: list[dict[str, Any]], custom: list[dict[str, Any]]) -> tuple[str, str]:
    """judgeval's ``judges`` list as JSON text (``[{"name": ...}]``, one per scorer config) and the first judge's
    name (for the default ``eval_name``): once per scorer set, not per call, when the caller caches it."""
    names = [conf.get("name", conf.get("score_type")) for conf in judgment]
    names += [conf.get("name") for conf in custom]
    text = "[" + ",".join(['{"name":' + json_text(name) + "}" for name in names]) + "]"
    return text, (str(names[0]) if names else "judge")  # as the f-string of the default name writes it


class SpanEvalCarrier:
    """``eval_transport="span"``: an evaluation rides on its span as ``judgment.pending_trace_eval``.

    The wire format is judgeval's own (judgeval 1.6.0, ``judgeval/trace/base_tracer.py``,
    ``BaseTracer.async_evaluate``, key in ``judgeval/judgment_attribute_keys.py``): a JSON list, one entry per
    ``async_evaluate`` call on the span, each ``{project_id, eval_name, judges: [{name}], examples: [{**example,
    example_id, created_at, trace_id, span_id}], is_offline: false, is_behavior: false}``; judgeval rewrites the
    whole list on every call, and so do we (with ``Span.set_attribute``; a span's ``attributes`` mapping is read
    only for span types without weak references, see below). The default ``eval_name`` is judgeval's
    ``async_evaluate_{judge}_{index}`` (index from 0 per span).

    Ledger: the evaluation is created and settled ``delivered`` in the evaluations ledger when it is attached to its
    span: from then on it *is* part of the span, whose fate (delivered, or dropped with a reason) the spans ledger
    counts. Per-span state: a weak-keyed list of entry texts (SDK spans); a span type without weak references (the
    span engine's ``__slots__`` record) keeps the list in its own attribute, read back (``EngineSpan.get_attribute``,
    else the ``attributes`` mapping) and appended to. ``attach`` says why when it cannot carry the run (no project id
    yet, a span type with neither, the per-span caps reached); the caller then sends it by the API transport, so
    nothing is lost.
    """

    def __init__(self, ledger: SignalLedger) -> None:
        self._ledger = ledger
        self._lock = threading.Lock()
        self._local = threading.local()  # .busy: this thread is inside attach (see the re-entry check there)
        # Per span: the JSON texts of its entries and their total length. Weak keys: an ended span's state goes
        # with the span, with no hook in the span pipeline.
        self._carried: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()
        # Spans without weak references: entries per (trace id, span id), for the default names and the entry cap
        # only (the text lives on the span). Bounded: a forgotten count restarts at 0 (a name index repeats).
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._project: tuple[str | None, str] = (None, "")  # the project id and its JSON text, for the last one seen

    def attach(self, span: Any, project_id: str | None, run: EvalRun, *, named: bool) -> str | None:
        """Add ``run`` (built by ``Tracer.async_evaluate``) to ``span``'s attribute: None when carried, else why
        not (``"no_project_id"``, ``"span_not_trackable"``, ``"span_full"``, ``"reentrant"``) and the caller uses the
        API."""
        judges, first = judges_text(run["judgment_scorers"], run["custom_scorers"])
        created_at = run.get("created_at") or _dt.datetime.now(_dt.timezone.utc).isoformat()
        return self.carry(
            span,
            project_id,
            json_text(run["trace_id"])[1:-1],  # the ids as carry writes them (a tracer's are hex: unchanged)
            json_text(run["trace_span_id"])[1:-1],
            run["examples"][0],
            judges,
            first,
            json_text(created_at),
            json_text(run["eval_name"]) if named else None,
        )

    def carry(
        self,
        span: Any,
        project_id: str | None,
        trace_id: str,
        span_id: str,
        example_text: str,
        judges: str,
        first: str,
        created_at_json: str,
        eval_name_json: str | None,
    ) -> str | None:
        """``attach`` from the run's parts, so ``Tracer.async_evaluate`` builds the run only when this says no:
        ``trace_id`` and ``span_id`` hex texts (written between quotes as they are), ``judges`` and ``first`` from
        :func:`judges_text`, ``created_at_json`` and ``eval_name_json`` JSON texts (``eval_name_json`` None:
        judgeval's default name). Same answers as ``attach``."""
        if not project_id:
            return "no_project_id"
        project = self._project
        if project[0] != project_id:
            project = self._project = (project_id, json_text(project_id))
        # judgeval's example_id is str(uuid.uuid4()): same shape, without os.urandom (see random_uuid).
        example = _example(
            example_text,
            f'"example_id":"{random_uuid()}","created_at":{created_at_json},'
            f'"trace_id":"{trace_id}","span_id":"{span_id}"',
        )
        key = (trace_id, span_id)
        local = self._local
        if getattr(local, "busy", False):
            # A signal handler on this thread interrupted an attach that holds the lock: waiting for it would
            # deadlock, sharing it (an RLock) would lose the outer call's entry. The API transport sends this one.
            return "reentrant"
        local.busy = True
        try:
            with self._lock:
                entries: list[str] | None = None
                if type(span) is not EngineSpan:  # the engine's __slots__ record has no weak references
                    try:
                        entries = self._carried.setdefault(span, [])
                    except TypeError:  # another span type without weak references
                        entries = None
                if entries is not None:
                    count = len(entries)
                    prefix = "[" + ",".join(entries)
                else:
                    # The span's own attribute is the state: read it back and append to its text.
                    prior = _attribute_text(span)
                    if prior is None:
                        return "span_not_trackable"
                    count = self._counts.get(key, 0)
                    prefix = prior[:-1] if prior else "["
                if count >= SPAN_EVALS_MAX:
                    return "span_full"
                if eval_name_json is None:
                    eval_name_json = json_text(f"async_evaluate_{first}_{count}")
                # judgeval's entry, key for key, as text around the example's (see _example).
                encoded = (
                    f'{{"project_id":{project[1]},'
                    f'"eval_name":{eval_name_json},'
                    f'"judges":{judges},"examples":[{example}],"is_offline":false,"is_behavior":false}}'
                )
                value = prefix + ("," if len(prefix) > 1 else "") + encoded + "]"
                if len(value) > SPAN_EVAL_ATTRIBUTE_MAX:
                    return "span_full"
                span.set_attribute(PENDING_TRACE_EVAL, value)
                if entries is not None:
                    entries.append(encoded)
                else:
                    counts = self._counts
                    counts[key] = count + 1
                    counts.move_to_end(key)
                    if len(counts) > _COUNTS_KEPT:
                        counts.popitem(last=False)
                led = self._ledger
                with led.lock:
                    led.created += 1
                    led.delivered += 1
            return None
        finally:
            local.busy = False
