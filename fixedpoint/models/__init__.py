"""Models for the design study: the digits MLP (no extra dependencies), and,
with the ``models`` extra, the digits conv net and all-MiniLM-L6-v2 as ONNX
graphs.  Importing this package imports nothing heavy."""
from .mlp import MLP, load_data, load_default, load_mlp

__all__ = ["MLP", "load_mlp", "load_data", "load_default"]
