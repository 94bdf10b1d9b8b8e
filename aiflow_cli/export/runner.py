"""Run an exported pair the way a deployment does: device.onnx, real bytes through the codec, server.onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aiflow_cli.codecs.base import ActivationCodec, EncodedTensor
from aiflow_cli.codecs.registry import codec_of
from aiflow_cli.schemas.manifest import ExportedPair
from aiflow_cli.tensors import tensors_of

__all__ = ["PairRunner"]


class PairRunner:
    def __init__(self, root: Path, pair: ExportedPair, threads: int | None = None) -> None:
        from aiflow_cli.ort import ort_session

        self.pair = pair
        self.device = ort_session(Path(root) / pair.device.file, threads)
        self.server = ort_session(Path(root) / pair.server.file, threads)
        self.codec: ActivationCodec = codec_of(pair)
        self.plain = ActivationCodec()

    def run_device(self, x: Any) -> list[EncodedTensor]:
        feeds = {d.name: t.detach().cpu().numpy() for d, t in zip(self.pair.device.inputs, tensors_of(x))}
        wire = self.device.run([d.name for d in self.pair.crossing], feeds)  # exit logits stay on the device
        return [self.codec.pack(wire[0])] + [self.plain.pack(w) for w in wire[1:]]

    def run_server(self, encoded: list[EncodedTensor]) -> list[np.ndarray]:
        arrays = [self.codec.unpack(encoded[0])] + [self.plain.unpack(e) for e in encoded[1:]]
        return self.server.run(None, {d.name: a for d, a in zip(self.pair.server.inputs, arrays)})

    def __call__(self, x: Any) -> tuple[list[np.ndarray], int]:
        """Outputs and the bytes that crossed the link."""
        encoded = self.run_device(x)
        return self.run_server(encoded), sum(len(e.data) for e in encoded)
