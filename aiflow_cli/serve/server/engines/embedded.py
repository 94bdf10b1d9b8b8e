"""The embedded KServe v2 server: a Starlette app over the served models (uvicorn runs it).

Endpoints: ``/v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata, extensions
``binary_tensor_data`` and ``sequence``), ``/v2/models/{name}[/versions/{v}]``, ``.../ready`` and
``.../infer``. Bad requests get a 4xx with ``{"error": message}`` and the server keeps serving:
400 malformed or mismatched tensors, 401 a missing or wrong bearer token (on every endpoint, health
included, when the server has one), 404 an unknown model,
409 a session the server no longer holds, 413 a body over the limit. Inference runs in a worker
thread so health checks answer while a model computes.
"""

from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aiflow_cli import __version__
from aiflow_cli.errors import InputError
from aiflow_cli.serve.protocol import (
    HEADER_LENGTH,
    MAX_BODY_BYTES,
    encode_infer_response,
    parse_infer_request,
)
from aiflow_cli.serve.server.halves import ServedModel, SessionLost

__all__ = ["build_app"]

log = logging.getLogger("aiflow.serve")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when the client went away before sending it all (logged in one line)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
    except ClientDisconnect:
        log.info("a client closed its connection after %d bytes of a request body", size)
        return None
    return b"".join(chunks)


def build_app(models: dict[str, ServedModel], token: str | None = None,
              max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def model_or_404(request: Request) -> ServedModel | JSONResponse:
        """The named model; the 404 lists the served ones (every caller here holds the token)."""
        name = request.path_params["name"]
        if name not in models:
            return _error(404, f"unknown model '{name[:80]}'; served: {', '.join(models)}")
        return models[name]

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """With a token set, every endpoint (health and metadata too) answers only to a caller holding it."""
        async def endpoint(request: Request) -> Response:
            if not authorised(request):
                return _error(401, "missing or wrong bearer token")
            return await handler(request)
        return endpoint

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(_: Request) -> Response:
        return JSONResponse({"name": "aiflow", "version": __version__, "extensions": ["binary_tensor_data", "sequence"]})

    async def model_metadata(request: Request) -> Response:
        found = model_or_404(request)
        return found if isinstance(found, JSONResponse) else JSONResponse(found.metadata())

    async def model_ready(request: Request) -> Response:
        found = model_or_404(request)
        return found if isinstance(found, JSONResponse) else JSONResponse({"name": found.name, "ready": True})

    async def infer(request: Request) -> Response:
        found = model_or_404(request)
        if isinstance(found, JSONResponse):
            return found
        try:
            body = await _read_body(request, max_body_bytes)
        except _TooLarge:
            return _error(413, f"request body over the limit of {max_body_bytes} bytes")
        if body is None:
            return _error(400, "the request body ended early")
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

    routes = [Route("/v2/health/live", guarded(live)), Route("/v2/health/ready", guarded(ready)),
              Route("/v2", guarded(server_metadata))]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(prefix, guarded(model_metadata)), Route(f"{prefix}/ready", guarded(model_ready)),
                   Route(f"{prefix}/infer", guarded(infer), methods=["POST"])]
    return Starlette(routes=routes)
