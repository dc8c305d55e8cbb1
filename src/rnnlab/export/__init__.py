"""Inference outside the training code: ONNX export and a torch-free runtime."""
