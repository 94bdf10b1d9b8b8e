"""Engines that serve the same v2 models: ``embedded`` (Starlette + uvicorn, onnxruntime inside) and
``triton`` (a real Triton Inference Server; ``triton_python`` is its Python-backend model)."""
