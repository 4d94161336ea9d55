"""AWS Lambda entry point: the service's own app (`app.main:create_app()`) behind API Gateway,
through Mangum, the ASGI-to-Lambda adapter.

Cold start, once per execution environment: when MODELS_S3_URI (`s3://bucket/prefix/`) is set,
the model files under that prefix are downloaded to MODELS_DIR (default /tmp/models, the only
writable path on Lambda); then the app's lifespan runs once, loading and warming the models.
Mangum's own lifespan handling ("auto"/"on") would run the startup and the shutdown around every
invocation, loading the models again for each request, so it is turned off and the lifespan is
entered here and left open for the life of the environment.

Deployed as `handler.handler` (deploy/aws/build.sh puts this file at the bundle's root).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from mangum import Mangum
from mangum.handlers import HTTPGateway
from mangum.types import Scope

from app.errors import ModelLoadError
from app.main import create_app
from app.observability import logs
from app.settings import Settings

logger = logging.getLogger("app.lambda")

MODEL_SUFFIXES = (".onnx", ".json")
"""What a models directory holds: the ONNX files and their cards."""
DEFAULT_DOWNLOAD_DIR = "/tmp/models"
T = TypeVar("T")


class S3Client(Protocol):
    """The two calls of boto3's S3 client that the download uses (a fake in tests)."""

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]: ...

    def download_file(self, Bucket: str, Key: str, Filename: str) -> None: ...  # noqa: N803


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"): the prefix is a directory."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"MODELS_S3_URI={uri!r} is not an s3://bucket/prefix URI")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


def download_models(uri: str, destination: Path, client: S3Client) -> list[Path]:
    """Copies the model files directly under the URI's prefix (not in sub-prefixes) into
    `destination`. Each file lands under a temporary name first and is renamed when complete.
    Their integrity is checked when the app loads them: each card holds its ONNX file's sha256.
    An S3 error is a ModelLoadError naming what could not be read: botocore's own messages name
    no bucket nor key (`An error occurred (403) when calling the HeadObject operation:
    Forbidden`)."""
    bucket, prefix = parse_s3_uri(uri)
    destination.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = _s3_call(f"s3://{bucket}/{prefix}", client.list_objects_v2, **request)
        for item in page.get("Contents", []):
            key: str = item["Key"]
            name = key[len(prefix) :]
            if "/" in name or PurePosixPath(name).suffix not in MODEL_SUFFIXES:
                continue
            target = destination / name
            partial = target.with_name(name + ".partial")
            _s3_call(
                f"s3://{bucket}/{key}",
                client.download_file,
                Bucket=bucket,
                Key=key,
                Filename=str(partial),
            )
            partial.replace(target)
            written.append(target)
        if not page.get("IsTruncated"):
            break
        request["ContinuationToken"] = page["NextContinuationToken"]
    if not written:
        raise FileNotFoundError(f"no .onnx or .json files under {uri}")
    return sorted(written)


def _s3_call(what: str, call: Callable[..., T], **kwargs: Any) -> T:
    try:
        return call(**kwargs)
    # botocore's ClientError, NoCredentialsError, EndpointConnectionError...
    except Exception as error:
        raise ModelLoadError(f"cannot read {what}: {error}") from error


_SERVER_HEADERS = frozenset({"host", "x-forwarded-port"})
"""What Mangum would parse the ASGI `server` from: headers a client may send as it likes."""
_FIRST_ONLY = frozenset({b"content-type", b"inference-header-content-length"})
"""Headers of which the app reads the first field of a request, as the HTTP service does."""


class HttpApiGateway(HTTPGateway):
    """Mangum's handler of API Gateway HTTP API events, with the ASGI `server` and `scheme` taken
    from what API Gateway itself states, never from the client's headers.

    Under gunicorn `server` is the socket's address. Mangum parsed it from the Host and
    X-Forwarded-Port headers: a port that is no integer (a client's own X-Forwarded-Port joined
    with API Gateway's, `443,80`; github.com/Kludex/mangum#303) or a Host with no port or two
    raised a ValueError outside the app, so the invocation failed (API Gateway's 5xx, and an
    error on the alarm that rolls a deployment back); and an invalid Host went into `server`,
    where Starlette built a 404's URL from it and failed (a 500). The headers themselves still
    reach the app as sent.

    API Gateway joins a header sent twice into one field, comma-separated. Of the two headers
    whose first field the app reads, Content-Type and Inference-Header-Content-Length, it gets
    the first element, as the HTTP service reads the first field (a 415 or a 400 otherwise). A
    single field holding such a list, which the HTTP service refuses, cannot be told from two
    here and is read the same way."""

    @property
    def scope(self) -> Scope:
        headers: dict[str, str] = self.event.get("headers") or {}
        kept = {
            name: value for name, value in headers.items() if name.lower() not in _SERVER_HEADERS
        }
        scope = HTTPGateway({**self.event, "headers": kept}, self.context, self.config).scope
        scope["headers"].extend(
            [name.lower().encode(), value.encode()]
            for name, value in headers.items()
            if name.lower() in _SERVER_HEADERS
        )
        for field in scope["headers"]:
            if field[0] in _FIRST_ONLY:
                field[1] = field[1].partition(b",")[0].strip()
        domain = self.event["requestContext"].get("domainName")
        # HTTP APIs answer HTTPS only, on 443
        scope["server"] = (domain if isinstance(domain, str) and domain else "localhost", 443)
        scope["scheme"] = "https"
        scope["aws.event"] = self.event
        return scope


def _boto3_s3_client() -> S3Client:
    # boto3 is in the Lambda Python runtime but not a dependency of the service: imported only
    # when MODELS_S3_URI asks for it.
    boto3 = importlib.import_module("boto3")
    client: S3Client = boto3.client("s3")
    return client


@dataclass
class LambdaService:
    """The app with its lifespan entered, and the adapter that turns events into requests."""

    adapter: Mangum
    lifespan: AsyncExitStack
    loop: asyncio.AbstractEventLoop

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.adapter(event, context)

    def close(self) -> None:
        """Runs the app's shutdown. Lambda freezes and discards environments without a hook
        for it; tests call it so that no startup is left pending."""
        self.loop.run_until_complete(self.lifespan.aclose())
        self.loop.close()


def install_logging(settings: Settings) -> None:
    """The app's log lines as a gunicorn worker sets them up (app.server.worker), for the Lambda
    process, which has no gunicorn: in LOG_FORMAT (text or JSON), from LOG_LEVEL, each carrying
    its request's ID, on stderr, and with ACCESS_LOG the access lines on stdout. Not through the
    root logger the Lambda runtime sets up: its format knows no request ID, and its level is not
    LOG_LEVEL."""
    formatter = logs.formatter(settings.log_format)
    errors = logging.StreamHandler(sys.stderr)
    errors.setFormatter(formatter)
    access: list[logging.Handler] | None = None
    if settings.access_log:  # `-` on the gunicorn service: stdout is the only target here
        lines = logging.StreamHandler(sys.stdout)
        lines.setFormatter(formatter)
        access = [lines]
    logs.route_app_lines([errors], settings.log_level.upper(), access)


def cold_start(
    env: Mapping[str, str] = os.environ, s3_client: S3Client | None = None
) -> LambdaService:
    """Fetches the models when MODELS_S3_URI is set, builds the app and runs its startup; on
    Lambda (AWS_LAMBDA_FUNCTION_NAME set) it sets up the log lines first (`install_logging`)."""
    settings_env = dict(env)
    uri = env.get("MODELS_S3_URI")
    if uri:
        settings_env["MODELS_DIR"] = env.get("MODELS_DIR") or DEFAULT_DOWNLOAD_DIR
    settings = Settings.from_env(settings_env)  # a bad setting fails before any download
    if "AWS_LAMBDA_FUNCTION_NAME" in env:
        install_logging(settings)
    if uri:
        files = download_models(uri, settings.models_dir, s3_client or _boto3_s3_client())
        logger.info("downloaded %d model files from %s to %s", len(files), uri, settings.models_dir)
    app = create_app(settings)
    # Mangum and the lifespan run on this loop; it stays the current loop between invocations.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    lifespan = AsyncExitStack()
    # The app's own lifespan, entered here (not through Mangum's LifespanCycle, whose failure is a
    # LifespanFailure holding the app's whole traceback as its message): models that do not load
    # raise the app's ModelLoadError, one line naming the file, which Lambda reports as the init
    # error; the cold start fails, loudly, and Lambda retries it.
    try:
        loop.run_until_complete(lifespan.enter_async_context(app.router.lifespan_context(app)))
    except BaseException:
        loop.close()
        raise
    adapter = Mangum(app, lifespan="off", custom_handlers=[HttpApiGateway])
    return LambdaService(adapter, lifespan, loop)


_service: LambdaService | None = None


def service() -> LambdaService:
    """The environment's one LambdaService, made on first use."""
    global _service
    if _service is None:
        _service = cold_start()
    return _service


def reset() -> None:
    """Shuts the current service down, so that the next invocation is a cold start (tests)."""
    global _service
    if _service is not None:
        _service.close()
        _service = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler: one API Gateway event in, one response out."""
    return service()(event, context)


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, start in the init phase (at import): it runs before the first request's timeout
    # starts counting, and with provisioned concurrency before any request at all.
    service()
