"""The KServe manifests in deploy/kserve/: the runtime runs the service's image as the app expects
(models from /mnt/models, the port it binds, readiness on a real route), the InferenceService
asks for that runtime and format, and both validate against KServe's CRD schemas (vendored in
deploy/kserve/crds/, or another release's at $KSERVE_CRDS), strictly: an unknown field (a typo)
fails, as kubernetes-validate does for the built-in kinds."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.rest.routes import ROUTES
from app.settings import Settings
from tests.conftest import ROOT
from tests.test_k8s import kustomized

KSERVE = ROOT / "deploy" / "kserve"
CRD_FILES = {
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
}
KUBERNETES_VERSION = kubernetes_validate.latest_version()


def manifest(kind: str) -> dict[str, Any]:
    for path in sorted(KSERVE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                found: dict[str, Any] = doc
                return found
    raise AssertionError(f"no {kind} in deploy/kserve")


@pytest.fixture(scope="module")
def runtime() -> dict[str, Any]:
    return manifest("ServingRuntime")


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    return manifest("InferenceService")


@pytest.fixture(scope="module")
def container(runtime: dict[str, Any]) -> dict[str, Any]:
    containers = runtime["spec"]["containers"]
    assert [c["name"] for c in containers] == ["kserve-container"]
    found: dict[str, Any] = containers[0]
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_the_runtime_serves_the_models_kserve_downloads(container: dict[str, Any]) -> None:
    # The storage initializer writes storageUri's files to /mnt/models.
    assert env_of(container)["MODELS_DIR"] == "/mnt/models"


def test_the_runtime_listens_where_its_port_and_probe_say(
    runtime: dict[str, Any], container: dict[str, Any]
) -> None:
    port = int(env_of(container)["BIND"].rsplit(":", 1)[1])
    ports = [p["containerPort"] for p in container["ports"]]
    assert ports[0] == port  # KServe's Service sends its port 80 to the first
    assert ports[1:] == [int(Settings().grpc_bind.rsplit(":", 1)[1])]  # gRPC, GRPC_BIND's default
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v2/health/ready", "port": port}
    assert probe["path"] in {route.path for route in ROUTES}
    annotations = runtime["spec"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == port
    assert annotations["prometheus.kserve.io/path"] in {route.path for route in ROUTES}


def test_the_runtime_speaks_the_open_inference_protocol_and_runs_as_the_image_user(
    container: dict[str, Any],
) -> None:
    assert manifest("ServingRuntime")["spec"]["protocolVersions"] == ["v2"]
    assert container["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["runAsNonRoot"] is True
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    assert int(env_of(container)["WORKERS"]) == int(resources["limits"]["cpu"])


def test_the_runtime_container_is_a_valid_kubernetes_container(container: dict[str, Any]) -> None:
    """The runtime's containers are core/v1 Containers: checked by the Kubernetes schema, as
    deploy/k8s is, whether or not the KServe CRDs are at hand."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runtime"}}
    pod["spec"] = {"containers": [container]}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_the_inference_service_asks_for_this_runtime_its_format_and_a_release(
    runtime: dict[str, Any], service: dict[str, Any]
) -> None:
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = [(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]]
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["storageUri"].startswith("s3://")
    assert model["storageUri"].endswith("/")


def test_knative_mode_is_offered_only_with_the_one_port_it_takes(
    service: dict[str, Any], container: dict[str, Any]
) -> None:
    """Knative refuses a container with more than one port, and the runtime declares REST's and
    gRPC's: Standard (RawDeployment before KServe 0.15) it must be, and the documents that offer
    Knative must say what it takes first (they offered it as is: an operator probe)."""
    mode = service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in ("Standard", "RawDeployment", "Knative")
    assert mode != "Knative" or len(container["ports"]) == 1
    section = (ROOT / "deploy" / "README.md").read_text().split("## 6. KServe")[1].split("\n## ")[0]
    comments = "\n".join(
        line.split("#", 1)[1]
        for path in sorted(KSERVE.glob("*.yaml"))
        for line in path.read_text().splitlines()
        if "#" in line
    )
    for text in (section, comments):
        flat = " ".join(text.split())
        assert "Knative" in flat
        assert "one container port only" in flat
    assert "remove the `h2c` port" in section


def test_the_kustomization_sets_the_runtime_image(
    container: dict[str, Any], tmp_path: Path
) -> None:
    kustomization = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in KSERVE.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert [image["name"] for image in kustomization["images"]] == [container["image"]]
    runtime = next(d for d in kustomized(KSERVE) if d["kind"] == "ServingRuntime")
    image = kustomization["images"][0]
    expected = f"{image['newName']}:{image['newTag']}"
    assert runtime["spec"]["containers"][0]["image"] == expected


# ---- against KServe's own CRD schemas ----


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists an object's fields and
    does not keep unknown ones (x-kubernetes-preserve-unknown-fields): the API server would
    silently drop a misspelled field, this makes it an error."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        result.setdefault("additionalProperties", False)
    return result


@pytest.fixture(scope="module")
def crds() -> Path:
    """KServe's CRDs as vendored in deploy/kserve/crds/ (v0.20.0), or another release's."""
    directory = Path(os.environ.get("KSERVE_CRDS") or KSERVE / "crds")
    missing = [name for name in CRD_FILES.values() if not (directory / name).is_file()]
    if missing:
        pytest.fail(f"{directory} lacks {missing}")
    return directory


@functools.cache
def load_crd(path: Path) -> dict[str, Any]:
    """A CRD file, parsed once (the InferenceService's is 2 MB of YAML)."""
    loaded: dict[str, Any] = yaml.load(
        path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    return loaded


def validator(crds: Path, resource: dict[str, Any]) -> jsonschema.Draft7Validator:
    crd = load_crd(crds / CRD_FILES[resource["kind"]])
    group, _, version = resource["apiVersion"].partition("/")
    assert crd["spec"]["group"] == group
    assert crd["spec"]["names"]["kind"] == resource["kind"]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v["served"]}
    assert version in served, f"{resource['apiVersion']} is not served by this CRD"
    return jsonschema.Draft7Validator(strict(served[version]["schema"]["openAPIV3Schema"]))


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_each_manifest_is_valid_against_kserves_crd(crds: Path, kind: str) -> None:
    resource = manifest(kind)
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message}"
        for e in validator(crds, resource).iter_errors(resource)
    ]
    assert errors == []


@pytest.mark.parametrize(
    ("kind", "path", "typo"),
    [
        ("ServingRuntime", ("spec", "containers", 0), "readinesProbe"),
        ("InferenceService", ("spec", "predictor", "model"), "storageURI"),
    ],
)
def test_the_crd_validation_refuses_a_misspelled_field(
    crds: Path, kind: str, path: tuple[str | int, ...], typo: str
) -> None:
    resource = yaml.safe_load(yaml.safe_dump(manifest(kind)))
    node = resource
    for key in path:
        node = node[key]
    node[typo] = "x"
    messages = [e.message for e in validator(crds, resource).iter_errors(resource)]
    assert any(typo in message for message in messages), messages
