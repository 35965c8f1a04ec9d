"""Write docs/reference.md: every public name of fixedpoint, with its signature
and the first paragraph of its docstring, module by module.

    python scripts/api_reference.py            # rewrite docs/reference.md
    python scripts/api_reference.py --check    # exit 1 if it is out of date

tests/test_docs.py runs the check, so the page cannot drift from the code.
Modules that need an optional extra (onnx for the graph runner, torch for QAT,
dask for scale-out) are documented when the extra is installed (CI installs all).
"""
import importlib
import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "reference.md"

# (module, what it is) in the architecture's order: formats -> kernels -> primitives ->
# layers -> profiles -> graph runner -> study/sweep/CLI
MODULES = [
    ("fixedpoint.formats", "number formats"),
    ("fixedpoint.intops", "elementwise integer arithmetic"),
    ("fixedpoint.fp8", "minifloat conversion and codes that carry their format"),
    ("fixedpoint.accumulate", "integer matrix products through accumulators"),
    ("fixedpoint.tensorcore", "FP8 tensor-core matrix products"),
    ("fixedpoint.blockscaled", "block-scaled formats (MX, NVFP4) and their GEMM"),
    ("fixedpoint.calibrate", "ranges and scales from data"),
    ("fixedpoint.quantization", "quantization to codes"),
    ("fixedpoint.requant", "requantization of accumulators"),
    ("fixedpoint.metrics", "error metrics"),
    ("fixedpoint.layers", "layers: linear, matmul, conv on a profile"),
    ("fixedpoint.profiles", "accelerator profiles as data"),
    ("fixedpoint.graph", "the ONNX graph runner"),
    ("fixedpoint.models", "models for the study"),
    ("fixedpoint.models.mlp", "the MLP workload"),
    ("fixedpoint.models.convnet", "the digits convolutional network"),
    ("fixedpoint.models.minilm", "all-MiniLM-L6-v2 on a profile"),
    ("fixedpoint.study", "the design study"),
    ("fixedpoint.sweep", "design sweeps"),
    ("fixedpoint.scaleout", "where the work runs: here or on a Dask cluster"),
    ("fixedpoint.dask_arrays", "dask arrays through the kernels"),
    ("fixedpoint.torch", "PyTorch layers with the target's forward pass"),
    ("fixedpoint.qat", "quantization-aware training in the study"),
    ("fixedpoint.rtl", "RTL test vectors"),
]


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    para = doc.split("\n\n")[0].replace("\n", " ").strip()
    return para


def _signature(name, obj) -> str:
    try:
        return f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        return name


def render() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `scripts/api_reference.py` (a test checks that it is",
             "current). Conventions: [api.md](api.md); semantics: [semantics.md](semantics.md).", ""]
    top = importlib.import_module("fixedpoint")
    lines += ["## `fixedpoint`", "", "The names exported by the package itself (each defined in a module "
              "below): " + ", ".join(f"`{n}`" for n in top.__all__) + ".", ""]
    for modname, what in MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            lines += [f"## `{modname}`: {what}", "", f"(not documented here: {e})", ""]
            continue
        lines += [f"## `{modname}`: {what}", "", _summary(mod), ""]
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                lines += [f"### class `{_signature(name, obj)}`", "", _summary(obj), ""]
                for mname, m in inspect.getmembers(obj):
                    if mname.startswith("_") or not (inspect.isfunction(m) or inspect.ismethod(m)
                                                     or isinstance(inspect.getattr_static(obj, mname),
                                                                   (classmethod, staticmethod))):
                        continue
                    if mname not in obj.__dict__:
                        continue
                    lines += [f"- `{_signature(mname, m)}`: {_summary(m)}"]
                lines.append("")
            elif callable(obj):
                lines += [f"### `{_signature(name, obj)}`", "", _summary(obj), ""]
            elif isinstance(obj, dict):
                lines += [f"### `{name}`", ""] + [f"- `{k!r}`: {v}" for k, v in obj.items()] + [""]
            elif inspect.ismodule(obj):
                lines += [f"### `{name}`", "", f"The submodule `{obj.__name__}` (below).", ""]
            elif isinstance(obj, pathlib.PurePath):
                # where the package is installed is not part of the API
                rel = pathlib.Path(obj).resolve().relative_to(pathlib.Path(top.__file__).resolve().parent.parent)
                lines += [f"### `{name}`", "", f"The folder `{rel.as_posix()}` of the installed package.", ""]
            else:
                lines += [f"### `{name}`", "", f"`{obj!r}`"[:300], ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv):
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/reference.md is out of date: run python scripts/api_reference.py")
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
