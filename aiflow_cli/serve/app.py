"""The embedded KServe v2 server: a Starlette app over the served models (uvicorn runs it).

Endpoints: ``/v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata, extensions
``binary_tensor_data`` and ``sequence``), ``/v2/models/{name}[/versions/{v}]``, ``.../ready`` and
``.../infer``. Bad requests get a 4xx with ``{"error": message}`` and the server keeps serving:
400 malformed or mismatched tensors, 401 a missing or wrong bearer token, 404 an unknown model,
409 a session the server no longer holds, 413 a body over the limit. Inference runs in a worker
thread so health checks answer while a model computes.
"""

from __future__ import annotations

import hmac
import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aiflow_cli import __version__
from aiflow_cli.errors import InputError
from aiflow_cli.serve.halves import ServedModel, SessionLost
from aiflow_cli.serve.protocol import (
    HEADER_LENGTH,
    MAX_BODY_BYTES,
    encode_infer_response,
    parse_infer_request,
)

__all__ = ["build_app"]

log = logging.getLogger("aiflow.serve")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(models: dict[str, ServedModel], token: str | None = None,
              max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def model_or_404(request: Request) -> ServedModel | JSONResponse:
        name = request.path_params["name"]
        if name not in models:
            return _error(404, f"unknown model '{name[:80]}'; served: {', '.join(models)}")
        return models[name]

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(_: Request) -> Response:
        return JSONResponse({"name": "aiflow", "version": __version__, "extensions": ["binary_tensor_data", "sequence"]})

    async def model_metadata(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        found = model_or_404(request)
        return found if isinstance(found, JSONResponse) else JSONResponse(found.metadata())

    async def model_ready(request: Request) -> Response:
        found = model_or_404(request)
        return found if isinstance(found, JSONResponse) else JSONResponse({"name": found.name, "ready": True})

    async def infer(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        found = model_or_404(request)
        if isinstance(found, JSONResponse):
            return found
        try:
            body = await _read_body(request, max_body_bytes)
        except _TooLarge:
            return _error(413, f"request body over the limit of {max_body_bytes} bytes")
        try:
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
            outputs, params = await run_in_threadpool(found.infer, parsed.tensors, parsed.parameters)
            content, head = encode_infer_response(found.name, parsed, outputs, params)
        except SessionLost as exc:
            return _error(409, exc.one_line())
        except InputError as exc:
            return _error(400, exc.one_line())
        except Exception:  # noqa: BLE001 - a bug must not take the server down; it is logged with its traceback
            log.exception("inference failed")
            return _error(500, "internal error while running the model (see the server log)")
        if head is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(head)})

    routes = [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata)]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(prefix, model_metadata), Route(f"{prefix}/ready", model_ready),
                   Route(f"{prefix}/infer", infer, methods=["POST"])]
    return Starlette(routes=routes)
