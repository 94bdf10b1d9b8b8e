"""Start a v2 server for an export: the embedded engine (Starlette + uvicorn, onnxruntime inside)
or Triton (see :mod:`aiflow_cli.serve.server.engines.triton`). Binding rules: :mod:`aiflow_cli.serve.binding`.
"""

from __future__ import annotations

from aiflow_cli.serve.binding import check_bind
from aiflow_cli.serve.launch import ServeSettings, pin_to_cores

__all__ = ["serve"]


def serve(settings: ServeSettings) -> None:
    """Check everything, then serve until interrupted."""
    token = check_bind(settings.host, settings.token_file)
    pin_to_cores(settings.cores)
    if settings.engine == "triton":
        from aiflow_cli.serve.server.engines.triton import serve_triton

        serve_triton(settings, token)
        return
    import uvicorn

    from aiflow_cli.serve.server.catalog import load_served_models
    from aiflow_cli.serve.server.engines.embedded import build_app

    models = load_served_models(settings.directory, settings.threads, settings.max_sessions, settings.idle_seconds,
                                settings.max_batch)
    app = build_app(models, token, settings.max_body)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
