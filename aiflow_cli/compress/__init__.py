"""``aiflow compress``: pruning, quantisation and distillation from YAML recipes."""
