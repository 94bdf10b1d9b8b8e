"""``compress()``: prune, distil and quantise a model from a YAML recipe, with a before/after report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from pydantic import Field

from aiflow_cli.settings import Settings

if TYPE_CHECKING:
    from aiflow_cli.schemas.report import CompressReport

__all__ = ["CompressSettings", "compress"]


class CompressSettings(Settings):
    model: Optional[str] = Field(None, description="Model to compress (as for profile); default: the recipe's 'model:'.")
    recipe: Path = Field(description="YAML recipe, e.g. recipes/minilm-l6-int8-dynamic.yaml.")
    out: Path = Field(description="Output directory (compressed model, recipe, report.json).")
    data: Optional[Path] = Field(None, description="Training/calibration data: an ImageNet-style folder or a text file "
                                                   "(default: ../shared/data).")
    force: bool = Field(False, description="Replace a non-empty --out directory.")
    trust_source: bool = Field(False, description="Allow the recipe's model: to be py:module:function.")


def compress(settings: CompressSettings, progress: Callable[[str, int, int], None] | None = None) -> "CompressReport":
    """Stages run in the recipe's order (prune and distill on the float model, then one quantize stage
    in onnxruntime). The recipe is validated before any work; the output directory appears only
    when every stage succeeded. The result is itself a model source: --model DIR."""
    from aiflow_cli.compress.pipeline import run_compress

    s = settings
    return run_compress(s.model, s.recipe, s.out, data=s.data, force=s.force, progress=progress,
                        trust_source=s.trust_source)
