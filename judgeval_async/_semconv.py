"""Which attribute names a span's kind, input, output and tags are written under: the ``semconv`` setting.

``judgment``: ``judgment.span_kind``, ``judgment.input``, ``judgment.output`` (what the Judgment platform reads).
``openinference``: ``openinference.span.kind``, ``input.value``/``input.mime_type``, ``output.value``/
``output.mime_type``, ``tag.tags`` (what Arize Phoenix reads natively, and Langfuse too).
``gen_ai``: the OpenTelemetry GenAI conventions, only where our data says something true: an operation name for the
span types that have one, the tool or agent name (the span's name), and the requested model of an ``llm`` span when
the function takes a ``model`` string. Message content (``gen_ai.input.messages``...) is structured, opt-in content we
do not have in that shape, so it is not written.

Everything here is computed once per tracer and once per decorated function, never per call. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_SEMCONV",
    "GEN_AI_OPERATIONS",
    "JSON_MIME",
    "OPENINFERENCE_KINDS",
    "SEMCONVS",
    "Semconv",
    "openinference_kind",
]

SEMCONVS: frozenset[str] = frozenset({"judgment", "openinference", "gen_ai"})
DEFAULT_SEMCONV: tuple[str, ...] = ("judgment", "openinference")

JSON_MIME = "application/json"  # every recorded value is our bounded JSON text

# Our span types -> OpenInference span kinds. A bare ``@observe`` (type "span") and any type of the user's own are
# CHAIN: a generic step. Phoenix shows a missing or unknown kind as UNKNOWN, with no kind-specific rendering.
OPENINFERENCE_KINDS: dict[str, str] = {
    "llm": "LLM",
    "tool": "TOOL",
    "chain": "CHAIN",
    "retriever": "RETRIEVER",
    "agent": "AGENT",
    "embedding": "EMBEDDING",
    "evaluator": "EVALUATOR",
    "reranker": "RERANKER",
    "guardrail": "GUARDRAIL",
    "prompt": "PROMPT",
    "span": "CHAIN",
}
# Our span types -> ``gen_ai.operation.name``, released values only (semconv v1.41). ``llm`` -> ``chat``: the common
# case; a text completion can say so with ``tracer.set_attribute("gen_ai.operation.name", "text_completion")``.
# chain/evaluator/reranker/guardrail/span have no released operation: nothing is written for them.
GEN_AI_OPERATIONS: dict[str, str] = {
    "llm": "chat",
    "tool": "execute_tool",
    "agent": "invoke_agent",
    "retriever": "retrieval",
    "embedding": "embeddings",
}


def openinference_kind(span_type: str) -> str:
    """The OpenInference kind of one of our span types (case-insensitive); CHAIN for a type of the user's own."""
    return OPENINFERENCE_KINDS.get(span_type.lower(), "CHAIN")


class Semconv:
    """The attribute names one tracer writes, precomputed from its ``semconv`` setting."""

    __slots__ = (
        "gen_ai",
        "input_keys",
        "input_mime_key",
        "judgment",
        "openinference",
        "output_keys",
        "output_mime_key",
    )

    def __init__(self, names: tuple[str, ...] | list[str] | frozenset[str] = DEFAULT_SEMCONV) -> None:
        self.judgment = "judgment" in names
        self.openinference = "openinference" in names
        self.gen_ai = "gen_ai" in names
        # The serialized text is computed once and written under each of these keys (one string object, shared).
        self.input_keys: tuple[str, ...] = (
            *(("judgment.input",) if self.judgment else ()),
            *(("input.value",) if self.openinference else ()),
        )
        self.output_keys: tuple[str, ...] = (
            *(("judgment.output",) if self.judgment else ()),
            *(("output.value",) if self.openinference else ()),
        )
        # Written next to the value (and only with it): every recorded value is our bounded JSON text.
        self.input_mime_key = "input.mime_type" if self.openinference else ""
        self.output_mime_key = "output.mime_type" if self.openinference else ""

    def kind_attributes(self, span_type: str, span_name: str) -> dict[str, Any]:
        """The attributes every span of this type and name starts with (computed once per function)."""
        attributes: dict[str, Any] = {}
        if self.judgment:
            attributes["judgment.span_kind"] = span_type
        if self.openinference:
            attributes["openinference.span.kind"] = openinference_kind(span_type)
        if self.gen_ai:
            kind = span_type.lower()
            operation = GEN_AI_OPERATIONS.get(kind)
            if operation is not None:
                attributes["gen_ai.operation.name"] = operation
            if kind == "tool":
                attributes["gen_ai.tool.name"] = span_name
            elif kind == "agent":
                attributes["gen_ai.agent.name"] = span_name
        return attributes

    def model_keys(self, span_type: str) -> tuple[str, ...]:
        """Where the ``model`` argument of an ``llm`` span goes (empty for other types)."""
        if span_type.lower() != "llm":
            return ()
        return (
            *(("llm.model_name",) if self.openinference else ()),
            *(("gen_ai.request.model",) if self.gen_ai else ()),
        )
