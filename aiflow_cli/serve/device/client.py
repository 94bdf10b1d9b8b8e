"""The device's KServe v2 client: tritonclient.http (the field's own client) with aiflow's retry
policy, the bearer token and request ids. A request is retried with backoff under the same id on a
connection error or a 5xx; a 4xx is the request's own fault and is not retried. ``infer`` reports a
failure with its reason; ``call`` raises it typed (:class:`SessionLostError` for a 409,
:class:`PeerError` otherwise)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from aiflow_cli.errors import PeerError, SessionLostError
from aiflow_cli.serve.protocol import V2_OF

__all__ = ["V2Client", "RETRYABLE_STATUS", "RETRY_SECONDS"]

RETRYABLE_STATUS = {"500", "502", "503", "504"}
RETRY_SECONDS = 10.0  # how long a request keeps retrying: longer than a server takes to restart
MAX_BACKOFF_S = 1.0


class V2Client:
    """tritonclient.http with aiflow's retry policy, the bearer token and request ids."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0, retries: int = 1000,
                 backoff_s: float = 0.05, retry_seconds: float = RETRY_SECONDS) -> None:
        """Retries (connection failures, 5xx) stop at ``retries`` extra attempts or once
        ``retry_seconds`` have passed since the first, whichever comes first; the wait between
        attempts doubles from ``backoff_s`` up to ``MAX_BACKOFF_S``. The default window outlasts a
        server restart."""
        import tritonclient.http as httpclient

        self.url = url.removeprefix("http://")
        self.httpclient = httpclient
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.retry_seconds = retry_seconds
        self.client = self._connect()

    def _connect(self):  # noqa: ANN202 - tritonclient type
        return self.httpclient.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                     network_timeout=self.timeout_s)

    def request_bytes(self, tensors: dict[str, np.ndarray], outputs: list[str], request_id: str, **kwargs: Any) -> int:
        """The HTTP body this request takes: the tensors' bytes plus the v2 JSON header."""
        body, _ = self.httpclient.InferenceServerClient.generate_request_body(
            self._inputs(tensors), [self.httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs],
            request_id=request_id, **kwargs)
        return len(body)

    def _inputs(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        inputs = []
        for name, array in tensors.items():
            item = self.httpclient.InferInput(name, list(array.shape), _v2_datatype(array))
            item.set_data_from_numpy(array, binary_data=True)
            inputs.append(item)
        return inputs

    def infer(self, model: str, tensors: dict[str, np.ndarray], outputs: list[str], request_id: str,
              **kwargs: Any) -> tuple[Any, int, str | None]:
        """(result or None, attempts, error). Retries connection failures and 5xx answers only:
        a 4xx is the request's own fault and retrying cannot help."""
        result, attempts, error, _ = self._attempt(model, tensors, outputs, request_id, **kwargs)
        return result, attempts, error

    def call(self, model: str, tensors: dict[str, np.ndarray], outputs: list[str], request_id: str,
             **kwargs: Any) -> Any:
        """The result, or :class:`SessionLostError` for a 409 (the server lost the session) and
        :class:`PeerError` for any other failure, after the same retries as :meth:`infer`."""
        result, _, error, status = self._attempt(model, tensors, outputs, request_id, **kwargs)
        if result is not None:
            return result
        if status == 409:
            raise SessionLostError(f"the server lost the session: {error}", status=status)
        raise PeerError(f"the server did not answer the request to {model}: {error}", status=status)

    def _attempt(self, model: str, tensors: dict[str, np.ndarray], outputs: list[str], request_id: str,
                 **kwargs: Any) -> tuple[Any, int, str | None, int | None]:
        from tritonclient.utils import InferenceServerException

        inputs = self._inputs(tensors)
        wanted = [self.httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
        error, code = None, None
        deadline = time.monotonic() + self.retry_seconds
        for attempt in range(1, self.retries + 2):
            try:
                result = self.client.infer(model, inputs, outputs=wanted, request_id=request_id, headers=self.headers,
                                           **kwargs)
                return result, attempt, None, None
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                error = f"{status or 'error'}: {exc.message()}"
                code = int(status) if status.isdigit() else None
                if status and status not in RETRYABLE_STATUS:
                    return None, attempt, error, code
            except Exception as exc:  # noqa: BLE001 - connection refused / reset / timeout from the HTTP stack
                error, code = f"{exc.__class__.__name__}: {exc}"[:200], None
                self.client = self._connect()
            wait = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
            if attempt > self.retries or time.monotonic() + wait > deadline:
                return None, attempt, error, code
            time.sleep(wait)
        return None, self.retries + 1, error, code

    def compute_ms(self, models: list[str]) -> float:
        """Cumulative compute time (input + infer + output) a Triton server reports for ``models``
        (the statistics extension): Triton answers no per-request timing, so a bench diffs this."""
        total_ns = 0
        for model in models:
            stats = self.client.get_inference_statistics(model, headers=self.headers)
            for entry in stats.get("model_stats", []):
                inf = entry.get("inference_stats", {})
                total_ns += sum(int(inf.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer",
                                                                          "compute_output"))
        return total_ns / 1e6

    def close(self) -> None:
        self.client.close()


def _v2_datatype(array: np.ndarray) -> str:
    return V2_OF[array.dtype.name]
