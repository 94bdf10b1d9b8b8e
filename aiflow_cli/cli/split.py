"""``aiflow split``: choose where to cut a model for a device, server and link (issue #3)."""

from __future__ import annotations

from aiflow_cli.cli.common import cli_errors
from aiflow_cli.cli.options import ModelArg
from aiflow_cli.errors import AiflowError

__all__ = ["split_cmd"]


@cli_errors
def split_cmd(model: ModelArg) -> None:
    """Choose the cut (and early exits) for a device, server and link; export device/server ONNX.

    Not available in this version: tracked as issue #3.
    """
    raise AiflowError("aiflow split is not available in this version yet", "tracked as issue #3")
