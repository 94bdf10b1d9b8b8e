"""The learned bottleneck's defaults, written once: the library (``TrainSettings``, the text study)
and the command line (``aiflow_cli.api.bottleneck``) both read them from here. No torch import, so
``--help`` stays fast. The measurements behind each choice are in docs/benchmarks.md."""

from __future__ import annotations

__all__ = ["PATCH", "EPOCHS", "AUGMENT", "SHRINKAGE", "MAX_DROP", "IMAGE_BETAS", "TEXT_BETAS", "TEXT_MIN_FIDELITY",
           "JPEG_QUALITIES"]

PATCH = 3  # the transform sees 3x3 blocks (1: every position on its own); 3 beat 2 on validation loss at blocks 12-14
EPOCHS = 4  # training epochs per beta
AUGMENT = 0  # augmented views per training image: no lower test drop at block13, 2-3x the training time
SHRINKAGE = 0.2  # covariance and Fisher estimates pulled toward their diagonals: lowest validation loss at block12
MAX_DROP = 1.0  # top-1 points the operating point may lose (on training + validation inputs, one standard error up)
IMAGE_BETAS = (7e-6, 1e-5, 1.5e-5, 2e-5)  # EfficientNet-Lite0 blocks 12-15: about 1,400 to 900 B per image
TEXT_BETAS = {"next-token": (1e-6, 3e-6, 6e-6, 1e-5), "sentence-embedding": (3e-6, 1e-5, 2e-5, 4e-5)}
TEXT_MIN_FIDELITY = {"next-token": 0.95, "sentence-embedding": 0.99}
JPEG_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # the JPEG upload baselines
