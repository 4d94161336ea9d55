"""The Kubernetes manifests in deploy/k8s/ and the environments' overlays in deploy/overlays/:
every resource validated offline against the Kubernetes JSON schemas (kubernetes-validate ships
them), and every cross-reference between the manifests, the app, the image and gunicorn's
settings checked, since no schema sees those. The overlays are rendered by kubectl's own
kustomize when kubectl is installed."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.rest.routes import ROUTES

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
OVERLAYS = ROOT / "deploy" / "overlays"
ENVIRONMENTS = ["staging", "production"]
INGRESS_NAMESPACE = "ingress-nginx"
PROMETHEUS_NAMESPACE = "monitoring"
# The oldest Kubernetes the manifests promise to work on (autoscaling/v2, PDB
# unhealthyPodEvictionPolicy) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
# Budgets over the measured RSS (deploy/README.md, Sizing: workers 65-71 MB in
# reports/benchmarks.md, the master 81-84 MB in reports/reliability.md): master, then each worker.
MASTER_RSS_MIB = 100
WORKER_RSS_MIB = 150
MEMORY_HEADROOM = 1.2


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path != KUSTOMIZATION)


def load_resources() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for path in manifest_files():
        resources.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return resources


RESOURCES = load_resources()


def the(kind: str) -> dict[str, Any]:
    found = [resource for resource in RESOURCES if resource["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return the("Deployment")


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    assert len(pod["containers"]) == 1
    found: dict[str, Any] = pod["containers"][0]
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def cpu_cores(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def mebibytes(quantity: str | int) -> float:
    units = {
        "Ki": 2**-10,
        "Mi": 1,
        "Gi": 2**10,
        "K": 1e3 / 2**20,
        "M": 1e6 / 2**20,
        "G": 1e9 / 2**20,
    }
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, f"unsupported memory quantity {quantity!r}"
    number, unit = match.groups()
    return float(number) * (units[unit] if unit else 1 / 2**20)


def gunicorn_setting(name: str) -> Any:
    """A literal assignment in gunicorn.conf.py, read without executing the file (it makes
    directories and sets environment variables)."""
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"gunicorn.conf.py does not set {name}")


def get_routes() -> set[str]:
    return {route.path for route in ROUTES if "GET" in (route.methods or set())}


def test_every_manifest_holds_the_expected_kinds() -> None:
    kinds = sorted(resource["kind"] for resource in RESOURCES)
    assert kinds == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "resource", RESOURCES, ids=[f"{r['kind']}/{r['metadata']['name']}" for r in RESOURCES]
)
def test_resource_is_valid_against_the_kubernetes_schema(
    resource: dict[str, Any], version: str
) -> None:
    # strict: an unknown field (a typo) is an error, not silently dropped by the API server.
    # A kind with no schema raises SchemaNotFoundError, so it fails here rather than passing.
    kubernetes_validate.validate(resource, version, strict=True)


def test_the_validator_rejects_a_misspelled_field(deployment: dict[str, Any]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_and_each_overlay_names_the_container_image(
    container: dict[str, Any],
) -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]
    assert "images" not in kustomization, "the base names no tag: each environment's is a SHA"
    for environment in ENVIRONMENTS:
        overlay = yaml.safe_load((OVERLAYS / environment / "kustomization.yaml").read_text())
        assert overlay["resources"] == ["../../k8s"]
        # The entry `kustomize edit set image latam-delay=...` rewrites (deploy-environment.yml).
        assert [image["name"] for image in overlay["images"]] == [container["image"]]


def test_deployment_selector_matches_its_pod_labels(deployment: dict[str, Any]) -> None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector
    assert selector.items() <= labels.items()


def test_service_selects_the_pods_on_a_port_the_container_exposes(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    service = the("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {port["name"] for port in container["ports"]}
    port_numbers = {port["containerPort"] for port in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names | port_numbers


def test_the_container_listens_where_gunicorn_binds(container: dict[str, Any]) -> None:
    bind_port = int(env_of(container)["BIND"].rsplit(":", 1)[1])
    assert bind_port in {port["containerPort"] for port in container["ports"]}
    annotations = the("Deployment")["spec"]["template"]["metadata"]["annotations"]
    metrics_port = int(env_of(container)["METRICS_BIND"].rsplit(":", 1)[1])  # /metrics alone
    assert metrics_port in {port["containerPort"] for port in container["ports"]}
    assert int(annotations["prometheus.io/port"]) == metrics_port != bind_port
    assert annotations["prometheus.io/path"] in get_routes()


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        ("livenessProbe", "/v2/health/live"),
        ("readinessProbe", "/v2/health/ready"),
        ("startupProbe", "/v2/health/ready"),
    ],
)
def test_probes_call_the_apps_health_routes(
    container: dict[str, Any], probe: str, path: str
) -> None:
    http_get = container[probe]["httpGet"]
    assert http_get["path"] == path
    assert http_get["path"] in get_routes(), f"{path} is not a GET route of app.rest.routes"
    names = {port["name"] for port in container["ports"]}
    assert http_get["port"] in names | {port["containerPort"] for port in container["ports"]}


def test_workers_match_the_cpu_limit_and_requests_equal_limits(container: dict[str, Any]) -> None:
    resources = container["resources"]
    cpu_limit = cpu_cores(resources["limits"]["cpu"])
    assert cpu_limit == int(cpu_limit) >= 1, "a whole number of cores: one worker per core"
    assert int(env_of(container)["WORKERS"]) == cpu_limit
    assert resources["requests"] == resources["limits"], "Guaranteed QoS"


def test_memory_limit_covers_the_master_and_every_worker(container: dict[str, Any]) -> None:
    workers = int(env_of(container)["WORKERS"])
    needed = MEMORY_HEADROOM * (MASTER_RSS_MIB + workers * WORKER_RSS_MIB)
    assert mebibytes(container["resources"]["limits"]["memory"]) >= needed


def test_termination_grace_outlasts_the_prestop_sleep_and_gunicorns_drain(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert pre_stop >= 1
    assert pod["terminationGracePeriodSeconds"] > pre_stop + gunicorn_setting("graceful_timeout")


def test_runs_as_the_images_non_root_user_on_a_read_only_root(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    user_lines = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    image_uid = int(user_lines[-1].split(":")[0])
    assert pod["securityContext"]["runAsUser"] == image_uid == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_tmp_is_a_writable_empty_dir(pod: dict[str, Any], container: dict[str, Any]) -> None:
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert not any(mount.get("readOnly") for mount in container["volumeMounts"])


def test_hpa_scales_the_deployment_on_cpu_and_the_deployment_leaves_it_the_count(
    deployment: dict[str, Any],
) -> None:
    hpa = the("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    metrics = [(m["type"], m["resource"]["name"]) for m in hpa["spec"]["metrics"]]
    assert ("Resource", "cpu") in metrics
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_pdb_selects_the_pods_and_leaves_one_serving(deployment: dict[str, Any]) -> None:
    pdb = the("PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= labels.items()
    min_replicas = the("HorizontalPodAutoscaler")["spec"]["minReplicas"]
    assert pdb["spec"]["maxUnavailable"] < min_replicas


# ---- who may connect ----


def allowed_sources(port_name: str, container: dict[str, Any]) -> set[str]:
    """The namespaces the NetworkPolicy admits to the container port named `port_name`."""
    numbers = {port["name"]: port["containerPort"] for port in container["ports"]}
    sources: set[str] = set()
    for rule in the("NetworkPolicy")["spec"]["ingress"]:
        ports = {numbers.get(p["port"], p["port"]) for p in rule["ports"]}
        if numbers[port_name] in ports:
            for peer in rule["from"]:
                sources.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    return sources


def test_network_policy_covers_the_pods_and_admits_only_named_namespaces(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    policy = the("NetworkPolicy")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    names = {port["name"] for port in container["ports"]}
    for rule in policy["ingress"]:
        # An empty `from` or `ports` would admit every source or every port.
        assert rule["from"]
        assert rule["ports"]
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, "no pod-only or ipBlock peer"
            assert list(peer["namespaceSelector"]) == ["matchLabels"]
        for port in rule["ports"]:
            assert port["port"] in names, f"{port['port']} is not a named port of the container"
            assert port["protocol"] == "TCP"


def test_the_api_port_admits_the_ingress_controller_and_metrics_admit_prometheus(
    container: dict[str, Any],
) -> None:
    service_ports = {port["targetPort"] for port in the("Service")["spec"]["ports"]}
    annotations = the("Deployment")["spec"]["template"]["metadata"]["annotations"]
    scraped = next(
        port["name"]
        for port in container["ports"]
        if port["containerPort"] == int(annotations["prometheus.io/port"])
    )
    for port in container["ports"]:
        api = port["name"] in service_ports and port["name"] != scraped
        expected = {INGRESS_NAMESPACE} if api else set()
        if port["name"] == scraped:
            expected.add(PROMETHEUS_NAMESPACE)
        assert allowed_sources(port["name"], container) == expected, port["name"]


# ---- the environments, rendered as the deploy workflow renders them ----


def render(environment: str, image: str, tmp_path: Path) -> list[dict[str, Any]]:
    """`kustomize build` of the overlay after `kustomize edit set image latam-delay=<image>`, as
    deploy-environment.yml runs them, on a copy: the edit rewrites the overlay's `images:`
    entry to that name and tag."""
    for tree in (K8S, OVERLAYS):
        shutil.copytree(tree, tmp_path / "deploy" / tree.name)
    overlay = tmp_path / "deploy" / "overlays" / environment / "kustomization.yaml"
    kustomization = yaml.safe_load(overlay.read_text())
    name, _, tag = image.rpartition(":")
    kustomization["images"] = [{"name": "latam-delay", "newName": name, "newTag": tag}]
    overlay.write_text(yaml.safe_dump(kustomization))
    return kustomized(overlay.parent)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_overlay_renders_valid_resources_with_the_image_the_workflow_sets(
    environment: str, tmp_path: Path
) -> None:
    image = "ghcr.io/owner/latam-delay:" + "0123456789abcdef" * 2 + "01234567"
    rendered = render(environment, image, tmp_path)
    overlay = yaml.safe_load((OVERLAYS / environment / "kustomization.yaml").read_text())
    assert sorted(r["kind"] for r in rendered) == sorted(r["kind"] for r in RESOURCES)
    for resource in rendered:
        kubernetes_validate.validate(resource, KUBERNETES_VERSIONS[-1], strict=True)
        assert resource["metadata"]["namespace"] == overlay["namespace"]
    deployment = next(r for r in rendered if r["kind"] == "Deployment")
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [image]
    hpa = next(r for r in rendered if r["kind"] == "HorizontalPodAutoscaler")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def kustomized(directory: Path) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize` renders from `directory` (the test skips without
    kubectl, which CI installs)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(f"kubectl is not installed: its kustomize renders {directory.name}")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
