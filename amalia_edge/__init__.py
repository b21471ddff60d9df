"""amalia-edge: run European-Portuguese language models on the edge.

Quantize a Hugging Face checkpoint on a workstation (GGUF, ONNX), then run it on an NVIDIA
Jetson AGX Orin with the best backend the device offers. Heavy libraries (llama.cpp, ONNX
Runtime, TensorRT, Textual) are imported only by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
