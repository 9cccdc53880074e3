"""Evaluation bodies: their encoding, packed payloads (held as one while the project id is unknown) split back byte
for byte, envelope keys."""

from __future__ import annotations

import json
import os

import pytest

from judgeval_async._delivery._envelope import new_envelope
from judgeval_async._evals import _encode, unpacked


def _run(i: int, example: object) -> dict[str, object]:
    return {
        "project_name": "p",
        "eval_name": f"e{i}",
        "trace_id": "0" * 32,
        "trace_span_id": "0" * 16,
        "examples": [json.dumps(example, ensure_ascii=False, separators=(",", ":"))],
        "judgment_scorers": [{"score_type": "faithfulness", "name": "faithfulness", "threshold": 0.5}],
        "custom_scorers": [],
        "model": None,
        "created_at": "2026-12-02T00:00:00+00:00",
    }


def test_encoded_body_holds_every_member_and_shared_scorer_lists_stay_right() -> None:
    """The body is the run as JSON (examples spliced in, no project_id); scorer lists encoded once and reused by
    identity still give each run its own scorers."""
    a = _run(0, {"input": "q"})
    b = {**_run(1, {"input": "r"}), "judgment_scorers": [{"score_type": "relevance", "name": "r", "threshold": 0.7}]}
    for run in (a, b, a, b):
        body = json.loads(_encode(run))
        expected = {k: v for k, v in run.items() if k != "examples"}
        expected["examples"] = [json.loads(run["examples"][0])]  # type: ignore[index]
        assert body == expected
    assert "project_id" not in json.loads(_encode({**a, "project_id": "p"}))


def test_unpacked_returns_each_body_byte_for_byte() -> None:
    """Bodies holding brackets, commas, quotes, escapes and non-ASCII text come back exactly as they were packed."""
    examples = [
        {"input": "],[", "actual_output": '"}, {"'},
        {"input": "naïve — 日本語 \\ \n", "nested": [[1, [2]], {"a": "]"}]},
        {"input": "", "actual_output": None},
        ["not", "an", "object"],
    ]
    bodies = [_encode(_run(i, ex)) for i, ex in enumerate(examples)]
    assert unpacked(b"[" + b",".join(bodies) + b"]") == bodies
    assert [json.loads(b)["examples"][0] for b in bodies] == examples


def test_unpacked_refuses_what_is_not_a_packed_payload() -> None:
    """A single run's body is not packed; a truncated or malformed array is not split (held, never posted)."""
    body = _encode(_run(0, {"input": "q"}))
    assert unpacked(body) is None
    assert unpacked(b"[" + body) is None
    assert unpacked(b"[" + body + b",]") is None
    assert unpacked(b"[" + body + b"  " + body + b"]") is None
    assert unpacked(b"[\xff\xfe]") is None


def test_envelope_keys_are_distinct_hex_without_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idempotency keys come from the private generator (os.urandom releases the GIL on the loop), 32 hex digits,
    distinct; a given key is kept."""

    def no_urandom(n: int) -> bytes:
        raise AssertionError("os.urandom called for an envelope key")

    monkeypatch.setattr(os, "urandom", no_urandom)
    keys = {new_envelope(b"x", signal="evals", items=1, route="evals").idempotency_key for _ in range(2000)}
    monkeypatch.undo()
    assert len(keys) == 2000
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)
    assert new_envelope(b"x", signal="evals", items=1, route="evals", idempotency_key="k-1").idempotency_key == "k-1"
