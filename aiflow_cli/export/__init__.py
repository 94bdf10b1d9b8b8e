"""Export split models to ONNX pairs with a manifest, and verify them."""
