"""The KServe v2 / Open Inference Protocol inference messages, with the binary tensor data extension.

::

    POST /v2/models/{name}/infer
    Inference-Header-Content-Length: <length of the JSON header>
    body = {"id": ..., "parameters": {...}, "inputs": [{"name", "shape", "datatype",
            "parameters": {"binary_data_size": N}}], "outputs": [{"name", "parameters": {"binary_data": true}}]}
           followed by each binary input's N bytes, in the order of "inputs"

The response has the same layout; outputs asked for as binary data (the default here) follow the
JSON header. A request without the header length is plain JSON with ``data`` lists. Every
malformed message is an :class:`InputError`, answered with a 400 naming what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiflow_cli.errors import InputError

__all__ = ["NUMPY_OF", "V2_OF", "InferRequest", "parse_infer_request", "encode_infer_response", "HEADER_LENGTH"]

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY_OF = {"BOOL": np.bool_, "UINT8": np.uint8, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
            "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
V2_OF = {np.dtype(v).name: k for k, v in NUMPY_OF.items()}
MAX_BODY_BYTES = 64 * 2**20  # the largest request body a server reads (413 above); --max-body changes it
MAX_BATCH = 16  # inputs one request may carry (--max-batch): each costs the server half's full compute
MAX_TENSORS = 64


@dataclass
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    tensors: dict[str, np.ndarray]
    binary_outputs: dict[str, bool] = field(default_factory=dict)  # requested output -> as binary?
    header_bytes: int = 0
    body_bytes: int = 0


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > 16 or not all(isinstance(d, int) and not isinstance(d, bool)
                                                                 and 0 <= d < 2**31 for d in value):
        raise InputError(f"{where}: 'shape' must be a list of non-negative whole numbers")
    return tuple(value)


def _depth(data: Any, limit: int = 32) -> int:
    """How deeply ``data`` nests lists, counted without recursion and given up past ``limit``."""
    depth, level = 0, [data]
    while level and depth <= limit:
        depth += 1
        level = [x for item in level if isinstance(item, list) for x in item if isinstance(x, list)]
    return depth


def _leaves(data: list) -> Any:
    """The non-list items of a nest of lists (iteratively: a deep nest cannot overflow the stack)."""
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise InputError(f"{HEADER_LENGTH}: '{header_length[:20]}' is not a number") from None
        if not 0 < n <= len(body):
            raise InputError(f"{HEADER_LENGTH} {n} does not fit a body of {len(body)} bytes")
        head, rest = body[:n], memoryview(body)[n:]
    else:
        head, rest = body, memoryview(b"")
    try:
        msg = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError("the request header is not JSON", "send a KServe v2 inference request") from None
    except RecursionError:  # the parser recurses per level: a deep nest ends here, cheaply
        raise InputError("the request header nests too deeply", "send a KServe v2 inference request") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("inputs"), list) or not msg["inputs"]:
        raise InputError("the request has no 'inputs' list", "send a KServe v2 inference request")
    if len(msg["inputs"]) > MAX_TENSORS:
        raise InputError(f"too many inputs ({len(msg['inputs'])})")
    params = msg.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError("'parameters' must be an object")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(msg["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InputError(f"{where}: needs a 'name'")
        name, dtype = item["name"], item.get("datatype")
        where = f"input '{name[:60]}'"
        if dtype not in NUMPY_OF:
            raise InputError(f"{where}: datatype {str(dtype)[:20]!r} is not one of {', '.join(NUMPY_OF)}")
        shape = _shape(item.get("shape"), where)
        count = math.prod(shape)  # Python integers: a product of large dimensions cannot wrap around
        if count > len(body):  # every element takes at least one byte, as JSON text or as binary data
            raise InputError(f"{where}: {dtype} {list(shape)} holds more than the {len(body)}-byte request can carry")
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InputError(f"{where}: binary_data_size must be a whole number")
            if size != count * np.dtype(NUMPY_OF[dtype]).itemsize:
                raise InputError(f"{where}: {size} bytes do not hold {dtype} {list(shape)}")
            if offset + size > len(rest):
                raise InputError(f"{where}: truncated binary data ({len(rest) - offset} of {size} bytes)")
            array = np.frombuffer(rest[offset:offset + size], dtype=NUMPY_OF[dtype]).reshape(shape)
            offset += size
        else:
            data = item.get("data")
            if not isinstance(data, list) or _depth(data) > len(shape) or sum(1 for _ in _leaves(data)) != count:
                raise InputError(f"{where}: 'data' does not hold {dtype} {list(shape)}")
            try:
                array = np.asarray(data, dtype=NUMPY_OF[dtype]).reshape(shape)
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"{where}: 'data' does not hold {dtype} {list(shape)}") from None
        if name in tensors:
            raise InputError(f"{where}: given twice")
        tensors[name] = array
    if offset != len(rest):
        raise InputError(f"{len(rest) - offset} bytes of binary data follow the tensors the header declares")
    outputs = {}
    for item in msg.get("outputs") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            outputs[item["name"]] = bool((item.get("parameters") or {}).get("binary_data", True))
    rid = msg.get("id")
    return InferRequest(id=str(rid)[:128] if rid is not None else None, parameters=params, tensors=tensors,
                        binary_outputs=outputs, header_bytes=len(head), body_bytes=len(body))


def encode_infer_response(model: str, request: InferRequest, outputs: dict[str, np.ndarray],
                          parameters: dict[str, Any]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when nothing is binary)."""
    wanted = request.binary_outputs or {name: True for name in outputs}
    unknown = [n for n in wanted if n not in outputs]
    if unknown:
        raise InputError(f"unknown output '{unknown[0][:60]}'", "outputs: " + ", ".join(outputs))
    items, blobs = [], []
    for name, binary in wanted.items():
        array = np.ascontiguousarray(outputs[name])
        item: dict[str, Any] = {"name": name, "datatype": V2_OF[array.dtype.name], "shape": list(array.shape)}
        if binary:
            blob = array.tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = array.reshape(-1).tolist()
        items.append(item)
    msg: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": items, "parameters": parameters}
    if request.id is not None:
        msg["id"] = request.id
    head = json.dumps(msg, separators=(",", ":")).encode()
    return head + b"".join(blobs), (len(head) if blobs else None)
