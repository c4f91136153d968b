"""Quantizers: ONNX Runtime (onnx.py) and NNCF for OpenVINO (openvino.py), settings as frozen presets."""
