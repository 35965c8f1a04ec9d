"""The conv net of the study: a small CNN trained on the shipped 8x8 digits.

``fixedpoint/data/digits_convnet.onnx`` was written by ``scripts/train_digits_convnet.py``
(PyTorch at training time only): input ``image`` ``[batch, 1, 8, 8]`` float32 (pixels times
1/16), output ``logits`` ``[batch, 10]``; nodes ``conv1`` (3x3, padding 1), ``dw2`` (depthwise
3x3, stride 2), ``pw3`` (1x1 pointwise), ``conv4`` (3x3, dilation 2), each followed by a Relu,
then ``flatten`` and the classifier ``fc`` (``Gemm``, ``transB=1``).  It was trained on the
MLP's training images and is evaluated on the same 450 held-out images.
"""
from .mlp import DATA_DIR, load_digits

__all__ = ["digits_convnet"]


def digits_convnet():
    """The shipped digits conv net and its data: ``(model, data)``.

    Returns
    -------
    model : onnx.ModelProto
        The network (opset 17).
    data : dict
        ``"name"``; ``"x"``: the 450 held-out images, ``[450, 1, 8, 8]`` float32;
        ``"y"``: their labels (int64); ``"x_calib"``: the 1347 training images, for
        calibration.  The split and scaling are those of ``fixedpoint/data/digits_mlp.npz``.

    Raises
    ------
    ModuleNotFoundError
        When ``onnx`` is missing (``pip install "fixedpoint[models]"``).

    Examples
    --------
    >>> from fixedpoint.models import digits_convnet
    >>> model, data = digits_convnet()
    >>> [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    ['conv1', 'dw2', 'pw3', 'conv4', 'fc']
    >>> data["x"].shape, data["x"].dtype, data["y"].shape
    ((450, 1, 8, 8), dtype('float32'), (450,))
    """
    try:
        import onnx
    except ImportError as e:
        raise ModuleNotFoundError('onnx is needed for the conv net and is not installed; install '
                                  'it with: pip install "fixedpoint[models]"', name="onnx") from e
    model = onnx.load_model(str(DATA_DIR / "digits_convnet.onnx"))
    x, y, tr, te = load_digits()
    x = x.reshape(-1, 1, 8, 8)
    data = {"name": f"digits ({len(te)} held-out images of {len(y)}, UCI optdigits)",
            "x": x[te], "y": y[te], "x_calib": x[tr]}
    return model, data
