"""The server side: an export's server halves as v2 models (``halves``, ``verifier``, ``catalog``) on
an engine (``engines.embedded``: Starlette + uvicorn + onnxruntime; ``engines.triton``: Triton
Inference Server). Only :mod:`aiflow_cli.api.serve` and this package import it; everything else
starts a server with :class:`aiflow_cli.serve.launch.ServerProcess`."""
