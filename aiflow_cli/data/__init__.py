"""Dataset readers and the fixed train/evaluation splits."""
