"""``aiflow compress``: pruning, quantization, distillation from YAML recipes (issue #5)."""

from __future__ import annotations

from aiflow_cli.cli.common import cli_errors
from aiflow_cli.cli.options import ModelArg
from aiflow_cli.errors import AiflowError

__all__ = ["compress_cmd"]


@cli_errors
def compress_cmd(model: ModelArg) -> None:
    """Compress MODEL with a YAML recipe (prune, quantize, distill) and report before/after.

    Not available in this version: tracked as issue #5.
    """
    raise AiflowError("aiflow compress is not available in this version yet", "tracked as issue #5")
