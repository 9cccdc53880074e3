"""What "the Judgment API is the target" means: the rules of _routes.traces_to_judgment and judgment_api."""

from __future__ import annotations

import pytest

from judgeval_async._config import Config
from judgeval_async._routes import judgment_api, traces_to_judgment

API = "https://api.example.com"


@pytest.mark.parametrize(
    ("otlp_endpoint", "judgment"),
    [
        ("", True),
        (f"{API}/otel/v1/traces", True),
        (f"{API}/otel/v1/traces/", True),
        ("HTTPS://API.EXAMPLE.COM/otel/v1/traces", True),
        (f"{API}/v1/traces", False),
        ("http://api.example.com/otel/v1/traces", False),
        ("https://collector.example.com/otel/v1/traces", False),
        ("http://127.0.0.1:4318/v1/traces", False),
    ],
)
def test_traces_to_judgment(otlp_endpoint: str, judgment: bool) -> None:
    """Only an unset otlp_endpoint or api_url's own traces URL (case/slash-insensitive) is Judgment's."""
    config = Config(project_name="p", api_url=API + "/", otlp_endpoint=otlp_endpoint)
    assert traces_to_judgment(config) is judgment


def test_judgment_api_needs_judgment_traces_or_an_api_key() -> None:
    """Tags and evaluations have a Judgment API when spans go there or an api_key is set."""
    third_party = "http://127.0.0.1:4318/v1/traces"
    assert judgment_api(Config(project_name="p", api_url=API))
    assert judgment_api(Config(project_name="p", api_url=API, api_key="k", otlp_endpoint=third_party))
    assert not judgment_api(Config(project_name="p", api_url=API, otlp_endpoint=third_party))
