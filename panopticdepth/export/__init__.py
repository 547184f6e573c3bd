"""Export of the network to deployment formats (ONNX)."""
