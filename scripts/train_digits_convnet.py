"""Train the study's conv net once and write it as fixedpoint/data/digits_convnet.onnx.

A small conv net on the shipped 8x8 digits (fixedpoint/data/digits.npz), with the split
and the input scaling of the MLP (fixedpoint/data/digits_mlp.npz: ``train_index`` to train,
the 450 ``test_index`` images held out, pixels times ``input_scale`` = 1/16).  The layers
exercise every kind of convolution the graph runner must override:

    image [batch, 1, 8, 8]
    conv1  Conv 1->16, 3x3, padding 1                          + relu1   [batch, 16, 8, 8]
    dw2    Conv 16->16, 3x3, depthwise (group 16), stride 2, padding 1 + relu2   [batch, 16, 4, 4]
    pw3    Conv 16->32, 1x1 (pointwise)                        + relu3   [batch, 32, 4, 4]
    conv4  Conv 32->32, 3x3, dilation 2, padding 2             + relu4   [batch, 32, 4, 4]
    flatten, fc  Gemm 512->10 (transB=1, as PyTorch exports nn.Linear)   logits [batch, 10]

Training uses PyTorch on the CPU (``pip install torch==2.13.0``: the CPU build), only here:
the package ships the ONNX file, built with ``onnx.helper`` from the trained weights, and
never imports PyTorch.  AdamW with a cosine schedule and label smoothing, minibatches of
64.  Deterministic: a fixed seed, one thread, deterministic algorithms,
a seeded shuffle; the same seed gives the same weights (the SHA-256 printed below) on the
same machine and PyTorch build (a different CPU kernel may change the last bits).

    python scripts/train_digits_convnet.py

Prints the weights' SHA-256, the float32 test accuracy by PyTorch and by ONNX Runtime
(when installed), and the file size.
"""
import hashlib
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

DATA = Path(__file__).resolve().parent.parent / "fixedpoint" / "data"
OUT = DATA / "digits_convnet.onnx"
SEED = 20261203
EPOCHS = 60
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-2
LABEL_SMOOTHING = 0.1   # keeps the logits small (|logit| < 10) and generalises better here


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.dw2 = torch.nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.pw3 = torch.nn.Conv2d(16, 32, 1)
        self.conv4 = torch.nn.Conv2d(32, 32, 3, padding=2, dilation=2)
        self.fc = torch.nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.dw2(x))
        x = torch.relu(self.pw3(x))
        x = torch.relu(self.conv4(x))
        return self.fc(torch.flatten(x, 1))


# (name, attributes) of each Conv, in order; each is followed by a Relu named relu<k>
CONVS = [("conv1", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
         ("dw2", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=16)),
         ("pw3", dict(kernel_shape=[1, 1])),
         ("conv4", dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]))]


def to_onnx(weights: dict, meta: dict) -> onnx.ModelProto:
    nodes, inits = [], []
    x = "image"
    for k, (name, attrs) in enumerate(CONVS, start=1):
        inits += [numpy_helper.from_array(weights[f"{name}.weight"], f"{name}.weight"),
                  numpy_helper.from_array(weights[f"{name}.bias"], f"{name}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name],
                                      name=name, **attrs))
        nodes.append(helper.make_node("Relu", [name], [f"relu{k}"], name=f"relu{k}"))
        x = f"relu{k}"
    nodes.append(helper.make_node("Flatten", [x], ["flatten"], name="flatten", axis=1))
    inits += [numpy_helper.from_array(weights["fc.weight"], "fc.weight"),
              numpy_helper.from_array(weights["fc.bias"], "fc.bias")]
    nodes.append(helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], ["logits"],
                                  name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "digits-convnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="scripts/train_digits_convnet.py", ir_version=8)
    model.doc_string = ("Conv net on the 8x8 UCI digits (pixels / 16, NCHW); split of "
                        "fixedpoint/data/digits_mlp.npz")
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    d = np.load(DATA / "digits.npz")
    m = np.load(DATA / "digits_mlp.npz")
    scale = np.float32(m["input_scale"])
    x_all = (d["images"].astype(np.float32) * scale).reshape(-1, 1, 8, 8)
    y_all = d["labels"].astype(np.int64)
    tr, te = m["train_index"].astype(np.int64), m["test_index"].astype(np.int64)
    x, y = torch.from_numpy(x_all[tr]), torch.from_numpy(y_all[tr])

    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        net.train()
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), BATCH):
            idx = perm[start:start + BATCH]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx],
                                                   label_smoothing=LABEL_SMOOTHING)
            loss.backward()
            opt.step()
        sched.step()
    net.eval()

    weights = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    digest = hashlib.sha256()
    for k in sorted(weights):
        digest.update(k.encode() + b"\0" + np.ascontiguousarray(weights[k]).tobytes())
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(x_all[te])).numpy()
        train_acc = float(np.mean(net(x).argmax(1).numpy() == y.numpy()))
    test_acc = float(np.mean(torch_logits.argmax(1) == y_all[te]))
    meta = {"test_accuracy_float32": f"{test_acc:.6f}", "test_images": str(len(te)),
            "seed": str(SEED), "weights_sha256": digest.hexdigest(),
            "input_scale": repr(float(scale)), "trained_with": f"torch {torch.__version__}"}
    model = to_onnx(weights, meta)
    OUT.write_bytes(model.SerializeToString())

    print(f"weights sha256: {digest.hexdigest()}")
    print(f"float32 accuracy (torch): train {train_acc:.4f}, "
          f"test {test_acc:.4f} ({int(round(test_acc * len(te)))}/{len(te)})")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: ONNX Runtime check skipped")
    else:
        sess = ort.InferenceSession(OUT.read_bytes(), providers=["CPUExecutionProvider"])
        ort_logits = sess.run(["logits"], {"image": x_all[te]})[0]
        ort_acc = float(np.mean(ort_logits.argmax(1) == y_all[te]))
        print(f"float32 test accuracy (ONNX Runtime): {ort_acc:.4f} "
              f"({int(round(ort_acc * len(te)))}/{len(te)}); max |logit difference| to torch "
              f"{np.abs(ort_logits - torch_logits).max():.2e}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, "
          f"sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()})")


if __name__ == "__main__":
    main()
