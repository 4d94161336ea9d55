"""The serverless path: deploy/aws/template.yaml passes cfn-lint (offline, SAM transform
included), its routes reach real routes of the app, and deploy/aws/handler.py answers real
API Gateway HTTP API (payload format 2.0) events from tests/payloads/ with the app's own answers,
loading the models once per cold start, from S3 through a fake client."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import cfn_yaml
from mangum import Mangum
from samtranslator.translator.transform import transform as sam_transform
from samtranslator.yaml_helper import yaml_parse
from starlette.testclient import TestClient

from app.errors import ModelLoadError
from app.inference.model import ModelSet
from app.main import create_app
from app.rest.routes import ROUTES
from app.settings import Settings
from deploy.aws import handler as lambda_handler
from tests.conftest import MODELS_DIR, PAYLOADS, ROOT

TEMPLATE = ROOT / "deploy" / "aws" / "template.yaml"
CONTEXT = SimpleNamespace(function_name="latam-delay", aws_request_id="test-request")


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return loaded


def body_of(event: dict[str, Any]) -> Any:
    return json.loads(event["body"])


@pytest.fixture
def load_count(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every ModelSet.load call's directory, in order."""
    calls: list[Path] = []
    original = ModelSet.load  # bound to ModelSet, the class every load is called on

    # *args and **kwargs: ModelSet.load's other parameters, passed through as they came
    def counting(cls: type[ModelSet], models_dir: Path, *args: Any, **kwargs: Any) -> ModelSet:
        calls.append(Path(models_dir))
        return original(models_dir, *args, **kwargs)

    monkeypatch.setattr(ModelSet, "load", classmethod(counting))
    return calls


class LambdaHandler(Protocol):
    """What the tests call of deploy/aws/handler.py, the module committed_models gives."""

    def handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]: ...

    def reset(self) -> None: ...


@pytest.fixture
def committed_models(monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaHandler]:
    """The handler as Lambda runs it, on the committed models and no S3."""
    monkeypatch.setenv("MODELS_DIR", str(MODELS_DIR))
    monkeypatch.delenv("MODELS_S3_URI", raising=False)
    lambda_handler.reset()
    yield lambda_handler
    lambda_handler.reset()


# ---- the template ----


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return loaded


def test_template_passes_cfn_lint_including_informational_rules() -> None:
    matches = lint_file(TEMPLATE, ManualArgs(include_checks=["I"]))
    assert not matches, "\n".join(f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches)


def test_cfn_lint_does_check_the_serverless_function(tmp_path: Path) -> None:
    broken = TEMPLATE.read_text().replace("Runtime: python3.12", "Runtime: python2.7")
    assert broken != TEMPLATE.read_text()
    (tmp_path / "template.yaml").write_text(broken)
    matches = lint_file(tmp_path / "template.yaml")
    assert any("python2.7" in m.message for m in matches), [m.message for m in matches]


def function(template: dict[str, Any]) -> dict[str, Any]:
    functions = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"
    ]
    assert len(functions) == 1
    properties: dict[str, Any] = functions[0]["Properties"]
    return properties


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def api_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    """(path, method) of every route of the HTTP API."""
    routes = resources_of(template, "AWS::ApiGatewayV2::Route").values()
    keys = [route["Properties"]["RouteKey"].split(" ", 1) for route in routes]
    return {(path, method) for method, path in keys}


def test_every_http_api_route_reaches_a_route_of_the_app(template: dict[str, Any]) -> None:
    routes = api_routes(template)
    app_routes = {(route.path, method) for route in ROUTES for method in route.methods or ()}
    assert {("/predict", "POST"), ("/health", "GET"), ("/v2/{proxy+}", "ANY")} <= routes
    assert not function(template).get("Events"), "the routes are the ApiGatewayV2 resources"
    proxies = [path.removesuffix("{proxy+}") for path, _ in routes if path.endswith("{proxy+}")]
    for path, method in routes:
        if path.endswith("{proxy+}"):
            assert any(p.startswith(path.removesuffix("{proxy+}")) for p, _ in app_routes), path
        else:
            assert (path, method) in app_routes, (
                f"{method} {path} is not a route of app.rest.routes"
            )
    # Every Open Inference Protocol route of the app is reachable through the API.
    for path, method in app_routes:
        if path.startswith("/v2") and method != "HEAD":
            reachable = (path, method) in routes or any(path.startswith(p) for p in proxies)
            assert reachable, f"{method} {path} has no route in the HTTP API"
    assert ("/metrics", "GET") not in routes


# ---- the template as CloudFormation receives it: the SAM transform, run offline ----


class NoManagedPolicies:
    """The transform asks IAM for managed policy ARNs by name; the template names none."""

    def load(self) -> dict[str, str]:
        return {}


def transformed(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The template after the SAM transform, with CodeUri as `sam deploy` uploads it and the
    conditions evaluated for these parameters (each `Fn::If` replaced by its branch)."""
    source = yaml_parse(TEMPLATE.read_text().replace("../../build/lambda", "s3://bundle/code.zip"))
    values = {"ModelsBucket": "models-bucket", **(parameters or {})}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the transform's pseudo-parameters
        output: dict[str, Any] = sam_transform(source, values, NoManagedPolicies())
    defaults = {name: p.get("Default") for name, p in output["Parameters"].items()}
    return resolve_conditions(output, {**defaults, **values})


def resolve_conditions(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    def value(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref" and argument in parameters:
                return parameters[argument]
            if key == "Fn::Equals":
                return str(value(argument[0])) == str(value(argument[1]))
            if key == "Fn::Not":
                return not value(argument[0])
            if key == "Condition":
                return conditions[argument]
            if key == "Fn::If":
                return value(argument[1] if conditions[argument[0]] else argument[2])
        if isinstance(node, dict):
            return {k: value(v) for k, v in node.items() if value(v) != {"Ref": "AWS::NoValue"}}
        if isinstance(node, list):
            return [value(item) for item in node]
        return node

    conditions: dict[str, bool] = {}
    for name, condition in template.get("Conditions", {}).items():
        conditions[name] = value(condition)
    resolved: dict[str, Any] = value(template)
    return resolved


@pytest.fixture(scope="module")
def deployed() -> dict[str, Any]:
    return transformed()


def the_resource(template: dict[str, Any], kind: str) -> dict[str, Any]:
    found = list(resources_of(template, kind).values())
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def test_every_route_needs_iam_authorization_by_default(deployed: dict[str, Any]) -> None:
    routes = resources_of(deployed, "AWS::ApiGatewayV2::Route").values()
    assert {r["Properties"]["AuthorizationType"] for r in routes} == {"AWS_IAM"}
    policy = the_resource(deployed, "AWS::IAM::ManagedPolicy")["Properties"]["PolicyDocument"]
    assert [s["Action"] for s in policy["Statement"]] == ["execute-api:Invoke"]


def test_only_the_explicit_parameter_opens_the_api() -> None:
    opened = transformed({"ApiAccess": "public"})
    routes = resources_of(opened, "AWS::ApiGatewayV2::Route").values()
    assert {r["Properties"]["AuthorizationType"] for r in routes} == {"NONE"}


def test_no_concurrency_is_reserved_unless_asked(deployed: dict[str, Any]) -> None:
    function = the_resource(deployed, "AWS::Lambda::Function")["Properties"]
    assert "ReservedConcurrentExecutions" not in function
    reserved = the_resource(transformed({"ReservedConcurrency": "20"}), "AWS::Lambda::Function")
    assert reserved["Properties"]["ReservedConcurrentExecutions"] == "20"


def test_the_api_calls_the_alias_that_each_deploy_publishes(deployed: dict[str, Any]) -> None:
    alias_name, alias = next(iter(resources_of(deployed, "AWS::Lambda::Alias").items()))
    assert alias["Properties"]["Name"] == "live"
    assert "Version" in alias["Properties"]["FunctionVersion"]["Fn::GetAtt"]
    integration = the_resource(deployed, "AWS::ApiGatewayV2::Integration")["Properties"]
    assert integration["IntegrationUri"] == {"Ref": alias_name}
    permission = the_resource(deployed, "AWS::Lambda::Permission")["Properties"]
    assert permission["FunctionName"] == {"Ref": alias_name}


def test_a_canary_shifts_traffic_and_rolls_back_on_the_5xx_errors_and_p99_alarms(
    deployed: dict[str, Any],
) -> None:
    alias = the_resource(deployed, "AWS::Lambda::Alias")
    group_ref = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]
    group = deployed["Resources"][group_ref["Ref"]]["Properties"]
    assert "Canary" in str(group["DeploymentConfigName"])
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
    assert group["AlarmConfiguration"]["Enabled"] is True
    watched = [
        deployed["Resources"][a["Name"]["Ref"]]["Properties"]
        for a in group["AlarmConfiguration"]["Alarms"]
    ]
    metrics = {(a["Namespace"], a["MetricName"], a.get("ExtendedStatistic")) for a in watched}
    assert ("AWS/ApiGateway", "5xx", None) in metrics
    assert ("AWS/Lambda", "Errors", None) in metrics
    assert ("AWS/Lambda", "Duration", "p99") in metrics
    api = next(iter(resources_of(deployed, "AWS::ApiGatewayV2::Api")))
    for alarm in watched:
        dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        if alarm["Namespace"] == "AWS/ApiGateway":
            assert dimensions == {"ApiId": {"Ref": api}, "Stage": "$default"}
        else:  # the alias, whichever version it sends a request to
            assert dimensions["Resource"] == {"Fn::Sub": "${PredictFunction}:live"}


def test_function_runs_this_handler_on_the_runtime_the_bundle_is_built_for(
    template: dict[str, Any],
) -> None:
    properties = function(template)
    module, _, name = properties["Handler"].partition(".")
    assert module == "handler"
    assert callable(getattr(lambda_handler, name))
    build_script = (ROOT / "deploy" / "aws" / "build.sh").read_text()
    version = properties["Runtime"].removeprefix("python")
    assert f"PYTHON_VERSION=${{PYTHON_VERSION:-{version}}}" in build_script
    assert properties["CodeUri"] == "../../build/lambda"
    assert "OUT=${OUT:-build/lambda}" in build_script


def test_function_reads_its_models_from_the_bucket_it_may_read(template: dict[str, Any]) -> None:
    properties = function(template)
    variables = properties["Environment"]["Variables"]
    assert variables["MODELS_S3_URI"] == {"Fn::Sub": "s3://${ModelsBucket}/${ModelsPrefix}"}
    assert variables["MODELS_DIR"].startswith("/tmp/")
    policies = [
        p["S3ReadPolicy"]["BucketName"] for p in properties["Policies"] if "S3ReadPolicy" in p
    ]
    assert policies == [{"Ref": "ModelsBucket"}]
    assert {"ModelsBucket", "ModelsPrefix", "MemorySize", "ReservedConcurrency"} <= set(
        template["Parameters"]
    )


# ---- the handler, invoked locally with API Gateway v2 events ----


def test_predict_event_gets_the_apps_own_prediction(
    committed_models: LambdaHandler, client: TestClient
) -> None:
    predict = event("apigw_v2_predict.json")
    assert predict["version"] == "2.0"
    assert predict["routeKey"] == "POST /predict"
    response = committed_models.handler(predict, CONTEXT)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"].startswith("application/json")
    assert response["isBase64Encoded"] is False
    body = json.loads(response["body"])
    assert body in ({"predict": [0]}, {"predict": [1]})
    assert body == client.post("/predict", json=body_of(predict)).json()


def test_invalid_event_is_a_400_naming_the_field(committed_models: LambdaHandler) -> None:
    response = committed_models.handler(event("apigw_v2_predict_invalid.json"), CONTEXT)
    assert response["statusCode"] == 400
    error = json.loads(response["body"])
    assert "MES" in error["error"]
    assert error["detail"]["field"] == "MES"
    assert error["detail"]["value"] == 13


def test_open_inference_protocol_routes_pass_through_the_proxy_route(
    committed_models: LambdaHandler,
) -> None:
    ready = event("apigw_v2_ready.json")
    assert ready["routeKey"] == "ANY /v2/{proxy+}"
    response = committed_models.handler(ready, CONTEXT)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"ready": True}


def test_models_load_once_per_cold_start_not_per_invocation(
    committed_models: LambdaHandler, load_count: list[Path]
) -> None:
    for name in ("apigw_v2_predict.json", "apigw_v2_predict_invalid.json", "apigw_v2_ready.json"):
        committed_models.handler(event(name), CONTEXT)
    assert load_count == [MODELS_DIR.resolve()]
    committed_models.reset()  # a new execution environment
    committed_models.handler(event("apigw_v2_predict.json"), CONTEXT)
    assert len(load_count) == 2


def test_mangums_own_lifespan_would_load_the_models_on_every_invocation(
    load_count: list[Path],
) -> None:
    """Why the handler runs the lifespan itself: if Mangum ever stops doing this, the handler's
    workaround can go."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        adapter = Mangum(create_app(Settings(models_dir=MODELS_DIR)), lifespan="auto")
        for _ in range(2):
            assert adapter(event("apigw_v2_predict.json"), CONTEXT)["statusCode"] == 200
    finally:
        loop.close()
    assert len(load_count) == 2


# ---- models from S3 ----


class FakeS3:
    """boto3's list_objects_v2 (paginated, `page_size` keys a page) and download_file over a
    dict of key -> local file."""

    def __init__(self, bucket: str, objects: dict[str, Path], page_size: int = 2) -> None:
        self.bucket = bucket
        self.objects = objects
        self.page_size = page_size
        self.downloaded: list[str] = []

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["Bucket"] == self.bucket
        keys = sorted(k for k in self.objects if k.startswith(kwargs.get("Prefix", "")))
        start = int(kwargs.get("ContinuationToken", 0))
        page = keys[start : start + self.page_size]
        more = start + self.page_size < len(keys)
        result: dict[str, Any] = {"Contents": [{"Key": k} for k in page], "IsTruncated": more}
        if more:
            result["NextContinuationToken"] = str(start + self.page_size)
        return result

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None:  # noqa: N803
        assert Bucket == self.bucket
        self.downloaded.append(Key)
        shutil.copyfile(self.objects[Key], Filename)


def bucket_with_models(tmp_path: Path) -> dict[str, Path]:
    objects = {f"latam-delay/models/{p.name}": p for p in sorted(MODELS_DIR.iterdir())}
    stray = tmp_path / "stray.onnx"
    stray.write_bytes(b"not a model")
    objects["latam-delay/models/old/delay-full.onnx"] = stray  # a sub-prefix: not this release
    objects["latam-delay/models/NOTES.md"] = stray  # not a model file
    objects["latam-delay/models-staging/delay-full.onnx"] = stray  # another prefix
    return objects


def test_cold_start_downloads_the_models_from_s3_and_serves_them(
    tmp_path: Path, load_count: list[Path]
) -> None:
    s3 = FakeS3("models-bucket", bucket_with_models(tmp_path))
    target = tmp_path / "lambda-tmp" / "models"
    env = {"MODELS_S3_URI": "s3://models-bucket/latam-delay/models", "MODELS_DIR": str(target)}
    service = lambda_handler.cold_start(env, s3_client=s3)
    try:
        response = service(event("apigw_v2_predict.json"), CONTEXT)
    finally:
        service.close()
    assert response["statusCode"] == 200
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in MODELS_DIR.iterdir())
    assert sorted(s3.downloaded) == sorted(
        f"latam-delay/models/{p.name}" for p in MODELS_DIR.iterdir()
    )
    assert load_count == [target.resolve()]


def test_a_corrupt_model_in_s3_fails_the_cold_start(tmp_path: Path) -> None:
    objects = bucket_with_models(tmp_path)
    corrupt = tmp_path / "delay-full.onnx"
    corrupt.write_bytes(MODELS_DIR.joinpath("delay-full.onnx").read_bytes()[:-16])
    objects["latam-delay/models/delay-full.onnx"] = corrupt
    env = {
        "MODELS_S3_URI": "s3://models-bucket/latam-delay/models/",
        "MODELS_DIR": str(tmp_path / "m"),
    }
    with pytest.raises(Exception, match="sha256"):
        lambda_handler.cold_start(env, s3_client=FakeS3("models-bucket", objects))


def test_an_empty_prefix_fails_the_cold_start(tmp_path: Path) -> None:
    s3 = FakeS3("models-bucket", bucket_with_models(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no \.onnx or \.json files"):
        lambda_handler.download_models("s3://models-bucket/nothing-here/", tmp_path, s3)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b", ("bucket", "a/b/")),
        ("s3://bucket/a/b/", ("bucket", "a/b/")),
        ("s3://bucket", ("bucket", "")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert lambda_handler.parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["https://bucket/a", "s3:///a", "bucket/a"])
def test_parse_s3_uri_refuses_what_is_not_s3(uri: str) -> None:
    with pytest.raises(ValueError, match="MODELS_S3_URI"):
        lambda_handler.parse_s3_uri(uri)


# ---- what a client puts in the headers API Gateway passes on ----


def with_headers(name: str, path: str | None = None, **headers: str) -> dict[str, Any]:
    """The event of tests/payloads/`name`, with these headers set (names with `_` for `-`) and,
    when given, another path (as API Gateway passes it: decoded)."""
    loaded = event(name)
    loaded["headers"] = {
        **loaded["headers"],
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    if path is not None:
        loaded["rawPath"] = loaded["requestContext"]["http"]["path"] = path
    return loaded


SERVER_HEADERS = [
    # a client's own X-Forwarded-Port, joined with API Gateway's (github.com/Kludex/mangum#303)
    {"x_forwarded_port": "443,80"},
    {"x_forwarded_port": "https"},
    {"host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com:"},
    {"host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com:443:443"},
    {"host": "["},
    {"host": "[", "x_forwarded_proto": "gopher"},
]


@pytest.mark.parametrize("headers", SERVER_HEADERS)
def test_a_clients_host_and_forwarded_headers_never_fail_the_invocation(
    committed_models: LambdaHandler, headers: dict[str, str]
) -> None:
    """The HTTP service's ASGI `server` is its socket's address; Mangum parsed it from the Host
    and X-Forwarded-Port headers (a ValueError: the invocation failed, a 5xx from API Gateway
    and an error on the alarm that rolls deployments back) and put an invalid Host in it, where
    Starlette then built the URL of a 404 from it (a 500)."""
    predicted = committed_models.handler(with_headers("apigw_v2_predict.json", **headers), CONTEXT)
    assert predicted["statusCode"] == 200, predicted
    unknown = with_headers("apigw_v2_ready.json", path="/v2/nope", **headers)
    response = committed_models.handler(unknown, CONTEXT)
    assert response["statusCode"] == 404, response
    assert json.loads(response["body"]) == {"error": "no route for GET /v2/nope"}
    assert response["headers"]["x-request-id"]


def binary_infer_event() -> tuple[dict[str, Any], int]:
    """A binary-extension OIP request for delay-minimal as API Gateway passes it (the body
    base64-encoded, its type not text), and the length of its JSON header."""
    count = 2
    opera = b"".join(len(v).to_bytes(4, "little") + v for v in [b"Grupo LATAM"] * count)
    tipo = b"".join(len(v).to_bytes(4, "little") + v for v in [b"N", b"I"])
    mes = b"".join(m.to_bytes(8, "little", signed=True) for m in (3, 7))
    inputs = [("OPERA", "BYTES", opera), ("TIPOVUELO", "BYTES", tipo), ("MES", "INT64", mes)]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "datatype": t,
                    "shape": [count],
                    "parameters": {"binary_data_size": len(d)},
                }
                for n, t, d in inputs
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    infer = event("apigw_v2_ready.json")
    path = "/v2/models/delay-minimal/infer"
    infer["rawPath"] = infer["requestContext"]["http"]["path"] = path
    infer["requestContext"]["http"]["method"] = "POST"
    infer["headers"]["content-type"] = "application/octet-stream"
    infer["body"] = base64.b64encode(header + opera + tipo + mes).decode()
    infer["isBase64Encoded"] = True
    return infer, len(header)


def test_binary_inference_passes_base64_both_ways(committed_models: LambdaHandler) -> None:
    infer, length = binary_infer_event()
    infer["headers"]["inference-header-content-length"] = str(length)
    response = committed_models.handler(infer, CONTEXT)
    assert response["statusCode"] == 200, response
    assert response["isBase64Encoded"] is True
    assert response["headers"]["content-type"] == "application/octet-stream"
    body = base64.b64decode(response["body"])
    header = json.loads(body[: int(response["headers"]["inference-header-content-length"])])
    assert [o["name"] for o in header["outputs"]] == ["label", "proba"]
    assert len(body) == int(response["headers"]["inference-header-content-length"]) + 2 * 8 + 2 * 4


def test_a_repeated_header_joined_by_api_gateway_is_read_as_its_first(
    committed_models: LambdaHandler, client: TestClient
) -> None:
    """API Gateway joins a header sent twice into one, comma-separated; the HTTP service reads
    the first Content-Type and Inference-Header-Content-Length of a request, so these are read
    as their first element too (as X-Request-ID is: app.observability.request_id.judged)."""
    predict = event("apigw_v2_predict.json")
    expected = client.post("/predict", json=body_of(predict)).json()
    for joined in ("application/json,application/json", "application/json,text/plain"):
        predict["headers"]["content-type"] = joined
        response = committed_models.handler(predict, CONTEXT)
        assert response["statusCode"] == 200, response
        assert json.loads(response["body"]) == expected
    infer, length = binary_infer_event()
    infer["headers"]["inference-header-content-length"] = f"{length},{length}"
    infer["headers"]["content-type"] = "application/octet-stream,application/octet-stream"
    assert committed_models.handler(infer, CONTEXT)["statusCode"] == 200


# ---- what an operator reads when a cold start fails ----


@pytest.mark.parametrize("files", [(), ("delay-minimal.json",)])
def test_a_cold_start_without_its_models_fails_with_one_line_naming_the_file(
    tmp_path: Path, files: tuple[str, ...]
) -> None:
    """Lambda reports an init error by its exception's type and message: the app's own
    ModelLoadError, one line naming the file as gunicorn's `cannot start:` line does, not
    Mangum's LifespanFailure holding the app's whole traceback as its message."""
    for name in files:
        shutil.copyfile(MODELS_DIR / name, tmp_path / name)
    with pytest.raises(ModelLoadError) as raised:
        lambda_handler.cold_start({"MODELS_DIR": str(tmp_path)})
    message = str(raised.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert ".onnx" in message or ".json" in message


# ---- the bundle deploy/aws/build.sh makes ----

IMPORT_NAMES = {"gunicorn": "gunicorn", "uvicorn-worker": "uvicorn_worker"}
"""The module a distribution of build.sh's SERVER_ONLY installs, where its name differs."""


def server_only_modules() -> list[str]:
    """The modules of the distributions build.sh leaves out of the bundle (its SERVER_ONLY)."""
    script = (ROOT / "deploy" / "aws" / "build.sh").read_text()
    found = re.search(r"^SERVER_ONLY = \{(.*)\}$", script, re.M)
    assert found, "build.sh names no SERVER_ONLY set"
    names = re.findall(r'"([^"]+)"', found.group(1))
    assert "gunicorn" in names
    return [IMPORT_NAMES.get(name, name.replace("-", "_")) for name in names]


def test_the_handler_serves_without_the_packages_the_bundle_leaves_out(tmp_path: Path) -> None:
    """build.sh installs the runtime dependencies less the HTTP server's (gunicorn, uvicorn-worker,
    uvloop, httptools): an import of one of them on the handler's path is a bundle whose every
    cold start fails with ModuleNotFoundError. Run in a fresh interpreter where they cannot be
    imported."""
    blocked = server_only_modules()
    program = f"""
import importlib.abc, json, sys
from types import SimpleNamespace

class LeftOut(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the Lambda bundle)")
        return None

sys.meta_path.insert(0, LeftOut())
from deploy.aws import handler
event = json.loads(open({str(PAYLOADS / "apigw_v2_predict.json")!r}).read())
response = handler.handler(event, SimpleNamespace(aws_request_id="x"))
print(response["statusCode"])
handler.reset()
"""
    env = {"PATH": os.environ["PATH"], "MODELS_DIR": str(MODELS_DIR), "HOME": str(tmp_path)}
    ran = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split()[-1] == "200", ran.stdout


# ---- log lines on Lambda ----


@pytest.fixture
def loggers_restored() -> Iterator[None]:
    """The app's loggers as they were, after a test that let the handler set them up."""
    names = ("app", "app.access")
    saved = {
        name: (lg.handlers[:], lg.level, lg.propagate)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)
    for name, (handlers, level, propagate) in saved.items():
        restored = logging.getLogger(name)
        restored.handlers, restored.level, restored.propagate = handlers, level, propagate


def test_on_lambda_log_lines_follow_log_format_log_level_and_access_log(
    loggers_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a gunicorn worker sets them up (app.server.worker): LOG_FORMAT, LOG_LEVEL and
    ACCESS_LOG apply, and each line made during a request carries its X-Request-ID."""
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": "latam-delay",
        "MODELS_DIR": str(MODELS_DIR),
        "LOG_FORMAT": "json",
        "ACCESS_LOG": "-",
    }
    service = lambda_handler.cold_start(env)
    try:
        response = service(event("apigw_v2_predict.json"), CONTEXT)
    finally:
        service.close()
    written = capsys.readouterr()
    lines = [json.loads(line) for line in (written.out + written.err).splitlines()]
    assert any(line["message"].startswith("models ready") for line in lines), lines
    (access,) = [line for line in lines if line["logger"] == "app.access"]
    assert access["request_id"] == response["headers"]["x-request-id"]
    assert (access["route"], access["status"]) == ("/predict", 200)

    quiet = lambda_handler.cold_start({**env, "LOG_LEVEL": "warning", "LOG_FORMAT": "text"})
    quiet.close()
    assert "models ready" not in capsys.readouterr().err


class RefusingS3(FakeS3):
    """S3 answering as botocore raises its errors: a message that names no bucket nor key."""

    def __init__(self, *args: Any, refuse: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refuse = refuse

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        if self.refuse == "list":
            raise RuntimeError(
                "An error occurred (NoSuchBucket) when calling the ListObjectsV2 operation: "
                "The specified bucket does not exist"
            )
        return super().list_objects_v2(**kwargs)

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None:  # noqa: N803
        if Key.endswith(".onnx"):
            raise RuntimeError(
                "An error occurred (403) when calling the HeadObject operation: Forbidden"
            )
        super().download_file(Bucket, Key, Filename)


@pytest.mark.parametrize(
    ("refuse", "named"),
    [
        ("list", "s3://models-bucket/latam-delay/models/"),
        ("download", "s3://models-bucket/latam-delay/models/delay-"),
    ],
)
def test_an_s3_error_fails_the_cold_start_naming_what_it_could_not_read(
    tmp_path: Path, refuse: str, named: str
) -> None:
    s3 = RefusingS3("models-bucket", bucket_with_models(tmp_path), refuse=refuse)
    env = {
        "MODELS_S3_URI": "s3://models-bucket/latam-delay/models/",
        "MODELS_DIR": str(tmp_path / "m"),
    }
    with pytest.raises(ModelLoadError) as raised:
        lambda_handler.cold_start(env, s3_client=s3)
    message = str(raised.value)
    assert named in message
    assert "\n" not in message
    assert ("NoSuchBucket" if refuse == "list" else "Forbidden") in message
