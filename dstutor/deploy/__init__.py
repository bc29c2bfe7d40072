"""Deployment: int8 weights and matmul, pruning, QAT, ONNX export, MLA decoding against transformers."""
