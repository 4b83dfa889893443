"""Deployment: ONNX export of the vision side, the ONNX engine and its quantization, the language
model on onnxruntime, and the torch-free runtime that runs an export."""
