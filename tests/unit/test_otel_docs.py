"""docs/otel.md's Collector configurations: valid YAML, self-consistent, and matching what the SDK sends.

The Collector itself cannot run here (otelcol-contrib is on neither PyPI nor Debian); these checks are what can be
verified without it.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

DOC = Path(__file__).resolve().parents[2] / "docs" / "otel.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def _configs() -> dict[str, dict[str, Any]]:
    configs = {}
    for block in _blocks("yaml"):
        name = re.match(r"# (\S+)\.yaml", block)
        assert name is not None, block[:80]
        configs[name.group(1)] = yaml.safe_load(block)
    return configs


def test_collector_configs_parse_and_pipelines_reference_defined_components() -> None:
    """Both configurations are YAML; every receiver/processor/exporter/extension a pipeline names is defined."""
    configs = _configs()
    assert set(configs) == {"otel-agent", "otel-gateway"}
    for config in configs.values():
        service = config["service"]
        assert set(service["extensions"]) <= set(config["extensions"])
        for pipeline in service["pipelines"].values():
            for kind in ("receivers", "processors", "exporters"):
                assert set(pipeline[kind]) <= set(config[kind]), kind
            assert pipeline["processors"][0] == "memory_limiter"  # first, as the Collector recommends
        for exporter in config["exporters"].values():
            storage = exporter.get("sending_queue", {}).get("storage")
            assert storage is None or storage in config["extensions"]


def test_sdk_endpoint_matches_the_agent_receiver_and_agent_matches_gateway() -> None:
    """The SDK example sends to the agent's OTLP/HTTP receiver (default path /v1/traces), on loopback; the agent
    forwards to the gateway receiver's port; the Judgment exporter uses the SDK's default traces URL."""
    configs = _configs()
    agent_http = configs["otel-agent"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    host, port = agent_http.rsplit(":", 1)
    assert host == "127.0.0.1"
    endpoints = re.findall(r'otlp_endpoint="([^"]+)"', DOC.read_text())
    assert f"http://{agent_http}/v1/traces" in endpoints
    gateway_port = configs["otel-gateway"]["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    agent_exporter = urllib.parse.urlsplit(configs["otel-agent"]["exporters"]["otlp_http"]["endpoint"])
    assert str(agent_exporter.port) == gateway_port == port == "4318"
    assert agent_exporter.path in ("", "/")  # a base URL: the exporter appends /v1/traces

    from judgeval_async import Config

    judgment = configs["otel-gateway"]["exporters"]["otlp_http/judgment"]
    assert judgment["traces_endpoint"] == Config.from_env(environ={}).traces_url
