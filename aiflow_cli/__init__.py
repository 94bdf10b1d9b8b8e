"""aiflow: run large models across a device, an edge server and the cloud.

The package is organised as one sub-package per pipeline stage
(models -> profiling -> split -> compress -> export -> serve); the CLI in
``aiflow_cli.cli`` is a thin Typer layer over these library functions.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
