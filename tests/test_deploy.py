"""The compose file and manifests: valid YAML, and only variables the service knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
KNOWN = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def _env_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        env = node.get("environment") or node.get("env")
        if isinstance(env, dict):
            names |= set(env)
        elif isinstance(env, list):
            names |= {e["name"] if isinstance(e, dict) else e.split("=")[0] for e in env}
        for value in node.values():
            names |= _env_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _env_names(value)
    return names


def test_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"kafka", "fallback"} <= set(compose["services"])
    service_env = set(compose["services"]["fallback"]["environment"])
    assert service_env <= KNOWN, service_env - KNOWN
    assert "FALLBACK_KAFKA_BOOTSTRAP_SERVERS" in service_env


def test_kubernetes_manifest() -> None:
    for document in yaml.safe_load_all((ROOT / "deploy" / "fallback-service.yaml").read_text()):
        names = {n for n in _env_names(document) if n.startswith(ENV_PREFIX)}
        assert names and names <= KNOWN, names - KNOWN


def test_readme_lists_only_known_variables() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    mentioned = set(re.findall(r"FALLBACK_[A-Z_]+[A-Z]", readme))
    expanded = {m for m in mentioned if not m.endswith("_")}
    # FALLBACK_KAFKA_SSL_* is written as a family; FALLBACK_TEST_* belong to the test harness.
    unknown = {
        m
        for m in expanded
        if m not in KNOWN and not m.startswith(("FALLBACK_KAFKA_SSL_", "FALLBACK_TEST_"))
    }
    assert not unknown, unknown


def test_topics_are_created_by_the_cli_verb() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    topics = compose["services"]["topics"]
    assert topics["command"][:2] == ["topics", "create"]
    assert compose["services"]["fallback"]["depends_on"]["topics"] == {
        "condition": "service_completed_successfully"
    }
    assert "--create" not in (ROOT / "docker-compose.yml").read_text()  # no shell loop
    jobs = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "fallback-service.yaml").read_text())
        if d["kind"] == "Job"
    ]
    container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["topics", "create"]


def test_dockerfile_is_multi_stage_non_root_and_checked() -> None:
    """No Docker engine runs here: the image's promises are checked in its Dockerfile."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert "pip wheel" in " ".join(lines)  # wheels built in the first stage
    runtime = lines[lines.index(stages[1]) :]
    assert not any("gcc" in line or "[dev]" in line for line in runtime)
    user = next(line for line in runtime if line.startswith("USER "))
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000  # fixed, non-root
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(runtime)
    health = " ".join(line for line in runtime if "HEALTHCHECK" in line or "/healthz" in line)
    assert "/healthz" in health
    labels = " ".join(runtime)
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels
