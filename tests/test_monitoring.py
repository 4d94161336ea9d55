"""deploy/k8s/monitoring, offline: the ServiceMonitor and PrometheusRule against the Prometheus
Operator's CRD schemas, the rules through `promtool check rules` and `promtool test rules`, the
dashboard against Grafana's dashboard JSON schema (all vendored in monitoring/schemas/ with
their source and version), and every metric they name against what the service exports."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
import yaml
from starlette.testclient import TestClient

from app.errors import ServiceError
from app.grpc import status as grpc_status
from app.observability.drift import SEASONAL_INPUTS
from app.observability.drift_metrics import DriftMonitor
from tests.test_k8s import K8S, OVERLAYS, env_of, kustomized, the

MONITORING = K8S / "monitoring"
SCHEMAS = MONITORING / "schemas"
PROMTOOL = shutil.which("promtool")
NOT_OURS = {"up", "kube_pod_status_ready"}
"""Prometheus's own and kube-state-metrics' series that the rules and the dashboard also read."""
PROMQL_FUNCTIONS = {  # and the one keyword the rules use
    "sum", "max", "min", "avg", "rate", "histogram_quantile", "abs", "absent", "increase",
    "last_over_time", "and",
}  # fmt: skip


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((MONITORING / name).read_text())
    return loaded


def strict(schema: Any) -> Any:
    """The CRD schema as the API server's strict field validation reads it: an object with
    declared properties takes no other (structural schemas prune them silently otherwise)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / f"{kind}-v1.json").read_text())
    # apiVersion, kind and metadata are checked by the API server, not declared in the schema
    return jsonschema.Draft7Validator(strict(schema))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("servicemonitor.yaml", "servicemonitor"), ("prometheusrule.yaml", "prometheusrule")],
)
def test_the_custom_resources_match_the_operators_schema(name: str, kind: str) -> None:
    resource = load(name)
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    errors = [error.message for error in crd_validator(kind).iter_errors(resource)]
    assert errors == []


def test_the_schema_check_rejects_a_misspelled_field() -> None:
    broken = load("servicemonitor.yaml")
    broken["spec"]["endpoints"][0]["intervall"] = broken["spec"]["endpoints"][0].pop("interval")
    assert any(
        "intervall" in e.message for e in crd_validator("servicemonitor").iter_errors(broken)
    )


def test_the_servicemonitor_scrapes_the_metrics_port_of_the_service() -> None:
    monitor = load("servicemonitor.yaml")["spec"]
    service = the("Service")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics"
    container = the("Deployment")["spec"]["template"]["spec"]["containers"][0]
    numbers = {port["name"]: port["containerPort"] for port in container["ports"]}
    target = ports["metrics"]["targetPort"]
    metrics_bind = env_of(container)["METRICS_BIND"]
    assert numbers.get(target, target) == int(metrics_bind.rsplit(":", 1)[1]) == 9100
    assert endpoint["path"] == "/metrics"
    assert monitor["jobLabel"] in service["metadata"]["labels"]
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "latam-delay"


def rule_groups(tmp_path: Path) -> Path:
    rules = tmp_path / "prometheusrule.rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": load("prometheusrule.yaml")["spec"]["groups"]}))
    return rules


@pytest.fixture
def promtool() -> str:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    return PROMTOOL


def test_promtool_checks_the_rules(promtool: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_groups(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def test_promtool_check_refuses_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    rules = rule_groups(tmp_path)
    rules.write_text(rules.read_text().replace("> 0.2", "> > 0.2"))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode != 0


def test_each_alert_fires_on_its_series_and_not_before(promtool: str, tmp_path: Path) -> None:
    rule_groups(tmp_path)
    shutil.copy(MONITORING / "prometheusrule.test.yaml", tmp_path)
    result = subprocess.run(
        [promtool, "test", "rules", "prometheusrule.test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        test["alertname"]
        for case in load("prometheusrule.test.yaml")["tests"]
        for test in case["alert_rule_test"]
    }
    alerts = {
        rule["alert"]
        for group in load("prometheusrule.yaml")["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert tested == alerts


class ServerErrors:
    """The status matchers of the 5xx recording rule, as Prometheus applies them: the regex
    anchored, and the statuses a `status!=` matcher leaves out."""

    def __init__(self, pattern: str, excluded: set[str]) -> None:
        self.pattern = pattern
        self.excluded = excluded

    def fullmatch(self, status: str) -> bool:
        return (
            status not in self.excluded and re.fullmatch(f"(?:{self.pattern})", status) is not None
        )


def server_error_statuses() -> ServerErrors:
    """The `status` matchers of the 5xx recording rules (5 minutes, 1 minute), which the
    dashboard's server-error panel must share (one definition of a server failure)."""
    records = " ".join(
        rule["expr"]
        for group in load("prometheusrule.yaml")["spec"]["groups"]
        for rule in group["rules"]
        if rule.get("record") in ("job:http_requests_5xx:rate5m", "job:http_requests_5xx:rate1m")
    )
    panels = json.loads((MONITORING / "dashboard.json").read_text())["panels"]
    (panel,) = (
        target["expr"] for panel in panels if panel["id"] == 2 for target in panel["targets"]
    )
    matchers = set(re.findall(r'status=~"([^"]*)"', records)) | set(
        re.findall(r'status=~"([^"]*)"', panel)
    )
    assert len(matchers) == 1, matchers
    excluded = set(re.findall(r'status!="([^"]*)"', records))
    assert set(re.findall(r'status!="([^"]*)"', panel.split("/", 1)[0])) == excluded
    assert "status" not in panel.split("/", 1)[1], "the denominator is every answer"
    return ServerErrors(matchers.pop(), excluded)


def test_server_errors_are_5xx_and_the_grpc_codes_of_server_failures() -> None:
    """Found by an operator probe: the 5xx alert counted REST's 5xx alone, over every request,
    gRPC's included, so a gRPC-only outage never fired. Each status a REST error can have and
    the gRPC code app.grpc.status gives the same error must agree on whose failure it is."""
    failure = server_error_statuses()
    statuses = {*grpc_status._CODES, 500}  # 500: a ServiceError without a code of its own
    for http_status in sorted(statuses):
        error = type("Error", (ServiceError,), {"status_code": http_status})("x")
        code = grpc_status.status_of(error).name
        server_side = http_status >= 500
        assert bool(failure.fullmatch(str(http_status))) is server_side, http_status
        assert bool(failure.fullmatch(code)) is server_side, (http_status, code)
    # app.grpc.calls' own: an unhandled error, a call cancelled, a call answered
    assert failure.fullmatch("INTERNAL")
    assert not failure.fullmatch("CANCELLED")
    assert not failure.fullmatch("OK")
    # app.server.protocol's 505: a request line of another HTTP version than 1.0 and 1.1 (a
    # client's, as a 400 is; counted under route <refused>, where the alert counted it as the
    # server's failure, so a client sending HTTP/2.0 request lines could page)
    assert not failure.fullmatch("505")
    for name in ("UNKNOWN", "DATA_LOSS", "DEADLINE_EXCEEDED"):
        assert failure.fullmatch(name), name
    named = {word for word in re.findall(r"[A-Z_]{2,}", failure.pattern)}
    assert named <= {code.name for code in grpc.StatusCode}, "a misspelt gRPC code never matches"


def test_the_dashboard_matches_grafanas_schema() -> None:
    schema = json.loads((SCHEMAS / "grafana-dashboard.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    assert [error.message for error in validator.iter_errors(dashboard)] == []
    dashboard["panel"] = dashboard.pop("panels")
    assert any("panel" in error.message for error in validator.iter_errors(dashboard))


def exported_names(client: TestClient) -> set[str]:
    """Every series name the service's /metrics can show, drift included."""
    text = client.get("/metrics").text
    names = set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))
    names |= {family.name for family in DriftMonitor([], 1).derive([])}
    names.add("drift_window_flights")
    histograms = {name for name in names if f"# TYPE {name} histogram" in text}
    names |= {f"{name}_{suffix}" for name in histograms for suffix in ("bucket", "sum", "count")}
    names |= {f"{name}_total" for name in names if f"# TYPE {name} counter" in text}
    return names


def named_series(expression: str) -> set[str]:
    without_labels = re.sub(
        r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expression
    )
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels))
    return {w for w in words if w not in PROMQL_FUNCTIONS and ":" not in w}


def test_rules_and_panels_read_only_series_that_exist(client: TestClient) -> None:
    exported = exported_names(client) | NOT_OURS
    rules = [
        rule["expr"]
        for group in load("prometheusrule.yaml")["spec"]["groups"]
        for rule in group["rules"]
    ]
    panels = json.loads((MONITORING / "dashboard.json").read_text())["panels"]
    queries = [target["expr"] for panel in panels for target in panel["targets"]]
    used = set().union(*(named_series(expression) for expression in rules + queries))
    assert "drift_psi" in used
    assert "http_requests_total" in used
    assert used <= exported, used - exported


def test_the_drift_alert_and_panel_leave_out_the_seasonal_inputs() -> None:
    """Found by replaying the data's months through a server (benchmarks.drift_replay): any live
    traffic, the data's own months included, puts MES's PSI far over 0.2, so the alert watching
    it fired all year round. The alert and the dashboard's PSI panel leave out exactly
    drift.SEASONAL_INPUTS."""
    matcher = 'feature!~"' + "|".join(SEASONAL_INPUTS) + '"'
    (alert,) = (
        rule["expr"]
        for group in load("prometheusrule.yaml")["spec"]["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "LatamDelayInputDrift"
    )
    panels = json.loads((MONITORING / "dashboard.json").read_text())["panels"]
    psi_panels = [
        target["expr"] for panel in panels for target in panel["targets"]
        if "drift_psi" in target["expr"]
    ]  # fmt: skip
    assert psi_panels
    for expression in [alert, *psi_panels]:
        assert re.findall(r'feature(?:!=|!~|=~|=)"[^"]*"', expression) == [matcher], expression


def test_kustomize_builds_the_monitoring_resources_and_the_dashboard_configmap() -> None:
    built = kustomize(MONITORING)
    assert set(built) == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    # In the Service's namespace, production's: rendered without one, the resources landed in
    # kubectl's current namespace and the ServiceMonitor (which selects Services of its own
    # namespace) scraped nothing (an operator probe).
    production = yaml.safe_load((OVERLAYS / "production" / "kustomization.yaml").read_text())
    for resource in built.values():
        assert resource["metadata"]["namespace"] == production["namespace"]
    assert "namespaceSelector" not in built["ServiceMonitor"]["spec"]
    configmap = built["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["latam-delay.json"]) == json.loads(
        (MONITORING / "dashboard.json").read_text()
    )


def commented_yaml(text: str, first: str) -> Any:
    """The YAML of the comment block of `text` that starts with the line `# {first}`."""
    block = re.search(rf"^# {re.escape(first)}.*\n(?:#   .*\n)+", text, re.MULTILINE)
    assert block is not None, first
    return yaml.safe_load(textwrap.dedent(re.sub(r"^# ", "", block.group(0), flags=re.MULTILINE)))


def kustomize(directory: Path) -> dict[str, Any]:
    """The rendered resources by kind (one of each here)."""
    return {doc["kind"]: doc for doc in kustomized(directory)}


def test_the_prometheus_selector_label_is_documented_as_a_kustomize_label(tmp_path: Path) -> None:
    """kube-prometheus-stack reads ServiceMonitors and PrometheusRules by their `release:` label:
    the kustomization says so, with the `labels:` entry to uncomment, and that entry, once
    uncommented, labels both without touching any selector."""
    text = (MONITORING / "kustomization.yaml").read_text()
    kustomization = yaml.safe_load(text)
    assert "labels" not in kustomization  # the release's name is the cluster's to say
    entry = commented_yaml(text, "labels:")
    assert entry["labels"][0]["pairs"] == {"release": "kube-prometheus-stack"}
    copy = Path(shutil.copytree(MONITORING, tmp_path / "monitoring"))
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization | entry))
    built = kustomize(copy)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert built[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = load("servicemonitor.yaml")["spec"]["selector"]
    assert built["ServiceMonitor"]["spec"]["selector"] == selector


def test_the_staging_overlay_the_kustomization_shows_puts_it_in_stagings_namespace(
    tmp_path: Path,
) -> None:
    overlay = commented_yaml((MONITORING / "kustomization.yaml").read_text(), "  apiVersion:")
    staging = yaml.safe_load((OVERLAYS / "staging" / "kustomization.yaml").read_text())
    assert overlay["namespace"] == staging["namespace"]
    shutil.copytree(K8S, tmp_path / "deploy" / "k8s")
    directory = tmp_path / "deploy" / "overlays" / "staging-monitoring"
    directory.mkdir(parents=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    built = kustomize(directory)
    assert set(built) == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    for resource in built.values():
        assert resource["metadata"]["namespace"] == staging["namespace"]
