"""What can be checked of the deployment without a Docker engine or a cluster: the compose file
against the compose specification, the Kubernetes objects against Kubernetes' and KEDA's schemas,
the alerts with promtool, every variable and metric named anywhere against the service, and the
generated references against their sources."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from check_jsonschema import builtin_schemas
from prometheus_client.parser import text_string_to_metric_families

from service.config import ENV_PREFIX, Settings
from service.dev import asyncapi, reference
from service.dev.broker import free_port
from tests import tools
from tests.kafka_helpers import Broker, Topics, create_topics
from tests.processes import service_process, wait_ready

ROOT = Path(__file__).resolve().parents[1]
KNOWN = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "fallback-service.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
KUSTOMIZATIONS = [DEPLOY / "kubernetes" / "base", DEPLOY / "kubernetes" / "overlays" / "production"]
KUBERNETES_VERSION = "1.33.0"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_every_yaml_and_json_file_parses() -> None:
    files = [COMPOSE, *DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"), ROOT / "docs/asyncapi.yaml"]
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())
    for line in (DEPLOY / "samples").glob("*.jsonl"):
        for row in line.read_text().splitlines():
            key, _, value = row.partition("|")
            assert key and json.loads(value), row


def test_compose_file_follows_the_compose_specification() -> None:
    jsonschema.validate(compose(), _compose_schema())


def _compose_schema() -> dict[str, Any]:
    path = Path(builtin_schemas.__file__).parent / "vendor" / "compose-spec.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_compose_references_resolve() -> None:
    services = compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for needed in depends:
            assert needed in services, f"{name} depends on unknown {needed}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    assert profiles == {"ui", "sample", "monitoring", "providers", "console"}
    # The console: its own process, its accounts from a secret file, on the host's loopback.
    console = services["console"]
    assert console["command"] == ["console"]
    assert console["environment"]["FALLBACK_CONSOLE_USERS_FILE"] == "/run/secrets/console_users"
    assert console["secrets"] == ["console_users"]
    assert all(str(p).startswith("127.0.0.1:") for p in console["ports"])
    assert console["read_only"] is True
    # The providers' secrets come from files compose mounts, never from the environment block.
    providers = services["fallback-providers"]
    assert providers["environment"]["FALLBACK_SINK"] == "nhn,solapi"
    assert {
        s.split("/")[-1] for s in providers["environment"].values() if "/run/secrets/" in str(s)
    } == set(providers["secrets"])
    assert set(providers["secrets"]) <= set(compose()["secrets"])
    assert services["topics"]["command"][:2] == ["topics", "create"]
    assert services["fallback"]["depends_on"]["topics"] == {
        "condition": "service_completed_successfully"
    }
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"  # the version the tests use


def _names_in(text: str) -> set[str]:
    return set(re.findall(r"FALLBACK_[A-Z0-9_]*[A-Z0-9]", text))


def test_every_variable_named_anywhere_is_a_setting() -> None:
    places = [
        COMPOSE,
        ROOT / ".env.example",
        ROOT / "README.md",
        ROOT / "Dockerfile",
        *DEPLOY.rglob("*.y*ml"),
        *DEPLOY.rglob("*.json"),
        *DEPLOY.rglob("*.md"),
        *(ROOT / "docs").glob("*.md"),
    ]
    for path in places:
        named = _names_in(path.read_text())
        # FALLBACK_TEST_* belong to the test harness; FALLBACK_COMPILE_CORE to the build.
        unknown = {
            n
            for n in named - KNOWN - {"FALLBACK_COMPILE_CORE"}
            if not n.startswith("FALLBACK_TEST_")
        }
        # Families written with a trailing _ (FALLBACK_KAFKA_SSL_*) are not names.
        assert not unknown, f"{path.relative_to(ROOT)}: {sorted(unknown)}"


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    built = subprocess.run(
        [tools.kustomize(), "build", str(directory)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(built.stdout) if d]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kubernetes_objects_validate(directory: Path) -> None:
    objects = _kustomize(directory)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget", "Job"} <= kinds
    assert {"ScaledObject", "TriggerAuthentication"} <= kinds
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(obj, tools.keda_schema(obj["kind"]))
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_deployment_is_hardened_and_probed() -> None:
    built = _kustomize(KUSTOMIZATIONS[0])
    objects = {o["kind"]: o for o in built if "console" not in o["metadata"]["name"]}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "cpu" in container["resources"]["requests"]
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Static membership under the pod's name: a restarted container takes its partitions back.
    named = {e["name"]: e.get("valueFrom", {}) for e in container["env"]}
    assert named["FALLBACK_KAFKA_GROUP_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The pod gets longer than the service's drain, which fits the contract's 10 s.
    drain = float(objects["ConfigMap"]["data"]["FALLBACK_SHUTDOWN_TIMEOUT_SECONDS"])
    assert drain <= 10 < pod["terminationGracePeriodSeconds"]
    scaled = objects["ScaledObject"]["spec"]
    job_args = objects["Job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    partitions = int(job_args[job_args.index("--partitions") + 1])
    assert scaled["maxReplicaCount"] <= partitions  # more replicas than partitions sit idle
    trigger = scaled["triggers"][0]["metadata"]
    assert trigger["topic"] == objects["ConfigMap"]["data"]["FALLBACK_INPUT_TOPIC"]
    assert trigger["consumerGroup"] == objects["ConfigMap"]["data"]["FALLBACK_GROUP_ID"]


def test_the_console_has_its_own_hardened_deployment_and_service() -> None:
    built = {(o["kind"], o["metadata"]["name"]): o for o in _kustomize(KUSTOMIZATIONS[0])}
    deployment = built[("Deployment", "fallback-console")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["console"]
    assert deployment["spec"]["replicas"] == 1  # sessions live in one process's memory
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert env["FALLBACK_CONSOLE_USERS_FILE"].startswith("/etc/fallback-console/")
    assert mounts["/etc/fallback-console"]["readOnly"] is True
    assert env["FALLBACK_CONSOLE_INDEX_PATH"].startswith("/var/lib/fallback-console/")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = built[("Service", "fallback-console")]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert ("Secret", "fallback-console-users") in built


def test_dockerfile_is_multi_stage_non_root_and_checked() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert "pip wheel" in " ".join(lines)  # wheels built in the first stage
    assert "rm -rf service/dev" in " ".join(lines)  # development code stays out
    runtime = lines[lines.index(stages[1]) :]
    build = " ".join(lines[: lines.index(stages[1])])
    assert "FALLBACK_COMPILE_CORE=1 pip wheel" in build and "setup.py" in build  # compiled core
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


def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    promtool = tools.promtool()
    for command in (["check", "rules", str(ALERTS)], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(
            [promtool, *command], capture_output=True, text=True, cwd=ALERTS.parent
        )
        assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", (ALERTS.parent / "alerts.test.yml").read_text()))
    assert alerts == tested


def test_dashboard_takes_its_datasource_as_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("status", "reason", "sms vs lms", "trunc", "dead letters", "latency", "lag"):
        assert topic in titles, topic
    for topic in ("table", "ready", "sms provider", "failover"):
        assert topic in titles, topic


def queried_metrics() -> set[str]:
    """Every metric name the dashboard and the alerts query."""
    exprs = [
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])
    ]
    exprs += [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    exprs.append(json.loads(DASHBOARD.read_text())["templating"]["list"][1]["definition"])
    return {m for e in exprs for m in re.findall(r"\b(fallback_[a-z_]+)", e)}


def test_generated_references_are_up_to_date() -> None:
    assert reference.main(["--check"]) == 0, "run: make docs"
    assert asyncapi.main(["--check"]) == 0, "run: make docs"


def test_readme_points_to_the_configuration_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/configuration.md" in readme
    assert len(_names_in(readme)) < len(KNOWN) // 2  # not a second copy of the reference


@pytest.mark.broker
async def test_every_metric_the_dashboard_and_alerts_query_is_exported(tansu: Broker) -> None:
    """Scrapes the real /metrics of `fallback-service run`, with both delivering sinks
    (failover) and delivery results so that their metrics (the collectors' too) are there, and
    compares names."""
    topics = Topics.fresh(tansu.overrides)
    await create_topics(tansu.bootstrap, topics, partitions=1)
    port = free_port()
    env = topics.env(
        tansu.bootstrap,
        FALLBACK_HTTP_PORT=str(port),
        FALLBACK_SINK="nhn,solapi",
        FALLBACK_NHN_APP_KEY="app",
        FALLBACK_NHN_SECRET_KEY="secret",
        FALLBACK_NHN_BASE_URL="http://127.0.0.1:9",
        FALLBACK_SOLAPI_API_KEY="key",
        FALLBACK_SOLAPI_API_SECRET="secret",
        FALLBACK_SOLAPI_BASE_URL="http://127.0.0.1:9",
        FALLBACK_DELIVERY_RESULTS="on",
    )
    with service_process(env) as process:
        await asyncio.to_thread(wait_ready, port, process)
        scraped = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")
    exported: set[str] = set()
    for family in text_string_to_metric_families(scraped.text):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
        }.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    missing = queried_metrics() - exported
    assert not missing, sorted(missing)
