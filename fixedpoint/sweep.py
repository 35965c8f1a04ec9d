"""Design sweeps: models x profiles x what-if variants x seeds, here or on Dask.

A sweep is a grid written in a TOML file (see ``examples/sweeps/``)::

    name = "accumulator-width"
    profiles = ["ane-int8", "h100-int8"]          # names or .toml/.json files
    seeds = [0, 1]                                # choose the calibration samples
    models = ["mlp", {name = "net", model = "net.onnx", data = "net.npz", limit = 200}]

    [variants]                                    # overrides of profile fields, by dotted path
    "accumulator.bits" = [12, 16, 20, 24, 32]
    "accumulator.overflow" = ["wrap", "saturate"]

Every combination of variant values is applied to every profile (the
profile's file layout with the fields replaced, read back as a profile: an
override that makes an invalid profile is a failed cell, with the reason).
Each cell (model, profile, variant values, seed) is one row of the result
table, written as soon as it is known: ``results.parquet`` when pyarrow is
installed, else ``results.jsonl`` (or ``table = "csv"``).  A sweep started
again with the same output folder skips the cells already in the table, so an
interrupted sweep resumes where it stopped; when every cell is done the table
is rewritten in grid order, so the same grid always gives the same table.

Columns: ``model``, ``profile``, one per variant field, ``seed``, ``status``
(``ok`` or ``failed``), ``error`` (one line), ``metric`` (``accuracy``,
``agreement`` or ``cosine_mean``, by the workload's kind), ``value``,
``drop`` (the float32 reference of the same model and seed minus ``value``:
percentage points for accuracy and agreement, cosine for embeddings),
``overflows`` and ``clipped`` (totals over the layers), ``min_sqnr_db``,
``weight_bytes``, ``energy_nj`` and ``time_ns`` (per inference, from the
profile's cost model) and ``seconds`` (wall time of the cell: the one column
that differs between runs).

Where cells run (``scheduler``): None (here, one after the other),
``"local:N"`` (a ``dask.distributed.LocalCluster`` of N worker processes
started for the run), the address of a running scheduler
(``"tcp://host:8786"``), or a ``distributed.Client``.  Workers build each
workload once per process from a recipe that is scattered to every worker
once (built-in models load from the installed package; user files travel
as bytes), and the float32 reference of each model and seed runs once, as
a task the cells depend on.  A worker lost in the middle of a sweep costs
only its running tasks, which Dask runs again elsewhere: the client writes
each cell's row once, when its result arrives.  :func:`map_profiles` is
the same machinery for ``fixedpoint study --scheduler``.

Examples
--------
>>> from fixedpoint import sweep
>>> cfg = sweep.load_config_text('''
... profiles = ["ane-int8"]
... models = [{name = "mlp", limit = 60}]
... [variants]
... "accumulator.bits" = [12, 32]
... ''')
>>> [c.label for c in cfg.cells()]
['mlp ane-int8 accumulator.bits=12 seed=0', 'mlp ane-int8 accumulator.bits=32 seed=0']
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._checks import parse_toml
from .accumulate import Accumulator
from .profiles import BUILTIN_NAMES, AcceleratorProfile, CostModel, Notes, OutputSpec, QuantSpec, get
from .scaleout import DASK_HINT, connect, one_thread, running_tasks
from .study import Progress, Workload, evaluate_profile
from .tensorcore import TensorCoreAccumulator

__all__ = ["SweepConfig", "ModelSpec", "Cell", "SweepResult", "load_config", "load_config_text",
           "sweep", "variant_profile", "read_table", "format_rows", "COLUMNS", "TABLE_FORMATS",
           "BUILTIN_MODELS", "DASK_HINT"]
#: Models the package ships (their data too).
BUILTIN_MODELS = ("mlp", "convnet", "minilm")
#: Table formats: one line each.
TABLE_FORMATS = {
    "auto": "parquet when pyarrow is installed, else jsonl",
    "parquet": "results.parquet (needs pyarrow), rewritten atomically after each row",
    "jsonl": "results.jsonl, one JSON object per line, appended and flushed after each row",
    "csv": "results.csv, appended and flushed after each row",
}
_HEAD = ["model", "profile"]
#: The columns after the variant fields.
COLUMNS = ["seed", "status", "error", "metric", "value", "drop", "overflows", "clipped", "min_sqnr_db",
           "weight_bytes", "energy_nj", "time_ns", "seconds"]
_INT_COLUMNS = {"seed", "overflows", "clipped", "weight_bytes"}
_FLOAT_COLUMNS = {"value", "drop", "min_sqnr_db", "energy_nj", "time_ns", "seconds"}
_METRIC = {"classification": ("accuracy", 100.0), "agreement": ("agreement", 100.0),
           "embedding": ("cosine_mean", 1.0)}


# ---------------------------------------------------------------------------
# The grid

@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid: a built-in name, or files (an ONNX graph or a
    ``.npz`` of MLP weights, with a ``.npz`` of data)."""

    name: str
    model: str | None = None
    data: str | None = None
    limit: int | None = None
    batch: int | None = None

    @property
    def kind(self) -> str:
        if self.model is None:
            return self.name
        return "onnx" if self.model.endswith(".onnx") else "mlp-npz"

    def recipe(self) -> dict:
        """What a worker needs to build the workload: file contents travel as bytes."""
        r = {"kind": self.kind, "name": self.name, "limit": self.limit, "batch": self.batch}
        h = hashlib.sha256(json.dumps(r, sort_keys=True).encode())
        for key in ("model", "data"):
            p = getattr(self, key)
            if p is not None:
                blob = Path(p).read_bytes()
                r[key] = (Path(p).name, blob)
                h.update(blob)
        r["digest"] = h.hexdigest()[:20]
        return r


@dataclass(frozen=True)
class Cell:
    """One cell: a model, a profile with variant values, a seed."""

    model: str
    profile: str
    variant: tuple            # ((dotted path, value), ...) in the config's order
    seed: int

    @property
    def key(self) -> str:
        return json.dumps([self.model, self.profile, [_key_value(v) for _, v in self.variant], self.seed])

    @property
    def label(self) -> str:
        parts = [self.model, self.profile] + [f"{k}={v}" for k, v in self.variant] + [f"seed={self.seed}"]
        return " ".join(parts)


def _key_value(v):
    return v if isinstance(v, str) else json.dumps(v)


@dataclass
class SweepConfig:
    """A parsed sweep file (:func:`load_config`)."""

    name: str
    models: list
    profiles: list            # AcceleratorProfile, in the file's order
    variants: dict            # dotted path -> list of values
    seeds: list
    out: Path | None = None
    table: str = "auto"
    figures: bool = True
    source: str = "config"

    @property
    def columns(self) -> list:
        return _HEAD + list(self.variants) + COLUMNS

    def cells(self) -> list:
        """Every cell, in grid order: model, profile, variant values, seed."""
        keys = list(self.variants)
        combos = list(itertools.product(*[self.variants[k] for k in keys])) or [()]
        return [Cell(m.name, p.name, tuple(zip(keys, combo)), s)
                for m in self.models for p in self.profiles for combo in combos for s in self.seeds]


def _field_error(source, key, msg, kind=ValueError):
    return kind(f"{source}: {key}: {msg}")


def _check_path_schema(path: str, source: str):
    """A dotted path must name a field of the profile file's layout."""
    parts = path.split(".")
    fields = {f.name: f for f in dataclasses.fields(AcceleratorProfile)}
    top = parts[0]
    if top not in fields:
        raise ValueError(f"{source}: variants: {path!r}: unknown field {top!r}; expected one of "
                         f"{list(fields)}")
    if len(parts) == 1:
        if top in ("weights", "activations", "output", "cost", "notes", "accumulator"):
            raise ValueError(f"{source}: variants: {path!r}: {top} is a table; name one of its fields "
                             f"(e.g. {top}.{_first_field(top)})")
        return
    tables = {"weights": QuantSpec, "activations": QuantSpec, "output": OutputSpec, "cost": CostModel,
              "notes": Notes}
    if top == "accumulator":
        # every accumulator kind a profile can hold (the built-in profiles show them all)
        kinds = {Accumulator, TensorCoreAccumulator} | {type(get(n).accumulator) for n in BUILTIN_NAMES
                                                        if get(n).accumulator is not None}
        names = ["kind"] + sorted({f.name for c in kinds for f in dataclasses.fields(c)})
    elif top in tables:
        names = [f.name for f in dataclasses.fields(tables[top])]
    else:
        raise ValueError(f"{source}: variants: {path!r}: {top} is not a table")
    if parts[1] not in names:
        raise ValueError(f"{source}: variants: {path!r}: unknown field {parts[1]!r} of {top}; "
                         f"expected one of {names}")
    if len(parts) > 2 and parts[1] != "format":
        raise ValueError(f"{source}: variants: {path!r}: {top}.{parts[1]} is not a table")


def _first_field(top):
    return {"weights": "format", "activations": "format", "output": "method", "cost": "mul_pj",
            "notes": "assumptions", "accumulator": "bits"}[top]


def load_config_text(text: str, *, source: str = "config", base: Path | None = None) -> SweepConfig:
    """Parse a sweep from TOML text (``base``: where relative paths start)."""
    return _config_from_dict(parse_toml(text, source), source, base or Path.cwd())


def load_config(path) -> SweepConfig:
    """Parse a sweep file.  Errors are ``ValueError``/``TypeError`` naming the
    file and the field (``sweep.toml: models[1].data: no such file ...``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"config: cannot read {str(path)!r}: {e.strerror or e}") from None
    return load_config_text(text, source=p.name, base=p.resolve().parent)


def _config_from_dict(d, source, base) -> SweepConfig:
    known = ("name", "models", "profiles", "variants", "seeds", "out", "table", "figures", "limit")
    for k in d:
        if k not in known:
            raise ValueError(f"{source}: unknown field {k!r}; expected one of {list(known)}")
    name = d.get("name", Path(source).stem if source != "config" else "sweep")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{source}: name: expected a non-empty string, got {name!r}")
    limit = d.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{source}: limit: expected a positive int, got {limit!r}")
    # models
    models = d.get("models", ["mlp"])
    if not isinstance(models, list) or not models:
        raise ValueError(f"{source}: models: expected a non-empty list of names or tables, got {models!r}")
    specs = []
    for i, m in enumerate(models):
        key = f"models[{i}]"
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, dict):
            raise TypeError(f"{source}: {key}: expected a model name or a table, got {m!r}")
        for k in m:
            if k not in ("name", "model", "data", "limit", "batch"):
                raise ValueError(f"{source}: {key}: unknown field {k!r}; expected name, model, data, "
                                 f"limit, batch")
        nm = m.get("name")
        if not isinstance(nm, str) or not nm:
            raise ValueError(f"{source}: {key}.name: expected a non-empty string, got {nm!r}")
        model, data = m.get("model"), m.get("data")
        if model is None:
            if nm not in BUILTIN_MODELS:
                raise ValueError(f"{source}: {key}.name: unknown model {nm!r}; expected one of "
                                 f"{list(BUILTIN_MODELS)}, or give model = a .onnx or .npz file")
            if data is not None:
                raise ValueError(f"{source}: {key}.data: the built-in model {nm!r} has its own data")
        else:
            if not isinstance(model, str) or not model.endswith((".onnx", ".npz")):
                raise ValueError(f"{source}: {key}.model: expected a .onnx graph or a .npz of MLP "
                                 f"weights, got {model!r}")
            if not isinstance(data, str):
                raise ValueError(f"{source}: {key}.data: a model file needs data (a .npz of inputs)")
            model, data = str((base / model)), str((base / data))
            for k, p in (("model", model), ("data", data)):
                if not Path(p).is_file():
                    raise ValueError(f"{source}: {key}.{k}: no such file {p!r}")
        for k in ("limit", "batch"):
            v = m.get(k, limit if k == "limit" else None)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{source}: {key}.{k}: expected a positive int, got {v!r}")
        spec = ModelSpec(nm, model, data, m.get("limit", limit), m.get("batch"))
        if spec.name in [s.name for s in specs]:
            raise ValueError(f"{source}: {key}.name: {nm!r} is listed twice")
        specs.append(spec)
    # profiles
    profiles = d.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        raise ValueError(f"{source}: profiles: expected a non-empty list of profile names or files, "
                         f"got {profiles!r}")
    plist = []
    for i, p in enumerate(profiles):
        if not isinstance(p, str):
            raise TypeError(f"{source}: profiles[{i}]: expected a profile name or file, got {p!r}")
        if p.endswith((".toml", ".json")):
            p = str(base / p)
        try:
            prof = get(p)
        except (ValueError, TypeError, OSError) as e:
            raise ValueError(f"{source}: profiles[{i}]: {e}") from None
        if prof.name in [q.name for q in plist]:
            raise ValueError(f"{source}: profiles[{i}]: {prof.name!r} is listed twice")
        plist.append(prof)
    # variants
    variants = d.get("variants", {})
    if not isinstance(variants, dict):
        raise TypeError(f"{source}: variants: expected a table of dotted paths to lists, got {variants!r}")
    flat = {}
    _flatten(variants, "", flat, source)
    for k, vals in flat.items():
        _check_path_schema(k, source)
        if not isinstance(vals, list) or not vals:
            raise ValueError(f"{source}: variants.{k}: expected a non-empty list of values, got {vals!r}")
        kinds = {type(v) for v in vals}
        if len(kinds) > 1 or not kinds <= {int, float, str, bool}:
            raise TypeError(f"{source}: variants.{k}: expected values of one kind (numbers, strings or "
                            f"booleans), got {vals!r}")
        if len(set(map(_key_value, vals))) != len(vals):
            raise ValueError(f"{source}: variants.{k}: a value is listed twice in {vals!r}")
        if k in ("name",):
            raise ValueError(f"{source}: variants.{k}: the profile's name is not a variant")
    # seeds
    seeds = d.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int)
                                                       or s < 0 for s in seeds):
        raise ValueError(f"{source}: seeds: expected a non-empty list of non-negative ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{source}: seeds: a seed is listed twice in {seeds!r}")
    table = d.get("table", "auto")
    if table not in TABLE_FORMATS:
        raise ValueError(f"{source}: table: expected one of {list(TABLE_FORMATS)}, got {table!r}")
    figures = d.get("figures", True)
    if not isinstance(figures, bool):
        raise TypeError(f"{source}: figures: expected true or false, got {figures!r}")
    out = d.get("out")
    if out is not None and not isinstance(out, str):
        raise TypeError(f"{source}: out: expected a folder name, got {out!r}")
    return SweepConfig(name, specs, plist, flat, list(seeds), None if out is None else base / out,
                       table, figures, source)


def _flatten(d, prefix, out, source):
    """TOML turns ``accumulator.bits = [...]`` (unquoted) into nested tables: both spellings work."""
    for k, v in d.items():
        key = prefix + k
        if isinstance(v, dict):
            _flatten(v, key + ".", out, source)
        else:
            out[key] = v


def variant_profile(profile: AcceleratorProfile, variant) -> AcceleratorProfile:
    """``profile`` with the fields of ``variant`` (``((dotted path, value), ...)``)
    replaced, read back through the file layout (so every rule of a profile
    file applies; errors name the field).

    Examples
    --------
    >>> from fixedpoint import profiles, sweep
    >>> p = sweep.variant_profile(profiles.get("ane-int8"), (("accumulator.bits", 20),))
    >>> p.accumulator.bits, p.name
    (20, 'ane-int8[accumulator.bits=20]')
    """
    if not variant:
        return profile
    d = profile.to_dict()
    for path, value in variant:
        parts = path.split(".")
        node = d
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, dict):         # a format given by name, refined by a field
                nxt = node[p] = _format_table(nxt)
            node = nxt
        node[parts[-1]] = value
    d["name"] = f"{profile.name}[{','.join(f'{k}={v}' for k, v in variant)}]"
    return AcceleratorProfile.from_dict(d, source=d["name"])


def _format_table(name):
    from .formats import FloatFormat, as_format
    f = as_format(name)
    if isinstance(f, FloatFormat):
        return {"kind": "float", "exp_bits": f.exp_bits, "man_bits": f.man_bits, "bias": f.bias,
                "inf": f.inf, "nan": "none" if f.nan is None else f.nan}
    return {"kind": "int", "bits": f.bits, "signed": f.signed}


# ---------------------------------------------------------------------------
# Workloads on the workers: built once per process from a recipe

_WORKLOADS: dict = {}


def _materialize(recipe, key):
    name, blob = recipe[key]
    d = Path(tempfile.gettempdir()) / "fixedpoint-sweep" / recipe["digest"]
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{key}-{name}"
    if not p.is_file() or p.stat().st_size != len(blob):
        tmp = p.with_suffix(p.suffix + f".{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, p)
    return str(p)


def _build_workload(recipe: dict, seed: int) -> Workload:
    from . import study
    kind, limit, batch = recipe["kind"], recipe["limit"], recipe["batch"]
    kw = {"seed": seed, "limit": limit}
    if kind == "mlp":
        return study.mlp_workload(**kw)
    if kind == "convnet":
        return study.convnet_workload(**kw)
    if kind == "minilm":
        return study.minilm_workload(**kw, **({"batch": batch} if batch else {}))
    model, data = _materialize(recipe, "model"), _materialize(recipe, "data")
    if kind == "onnx":
        return study.graph_workload(model, data, **kw, **({"batch": batch} if batch else {}),
                                    name=recipe["name"])
    from .models.mlp import load_data, load_mlp
    return study.mlp_workload(load_mlp(model), load_data(data), **kw)


def _workload(recipe: dict, seed: int) -> Workload:
    key = (recipe["digest"], seed)
    if key not in _WORKLOADS:
        _WORKLOADS[key] = _build_workload(recipe, seed)
    return _WORKLOADS[key]


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _reference_task(recipe: dict, seed: int):
    """The float32 reference of a model and seed: its result, or the error that stops the model."""
    try:
        w = _workload(recipe, seed)
        return {"ok": True, "result": evaluate_profile(w, get("fp32")), "kind": w.kind}
    except Exception as e:      # noqa: BLE001 - a failing model is a failed row, not a crash
        return {"ok": False, "error": _one_line(e)}


def _cell_task(recipe: dict, cell: Cell, profile, reference: dict) -> dict:
    """One cell's row (status ``failed`` with the error when anything goes wrong)."""
    row = _row_head(cell)
    if isinstance(profile, str):                      # the variant made an invalid profile
        return _failed(row, profile)
    if not reference["ok"]:
        return _failed(row, reference["error"])
    t0 = time.perf_counter()
    try:
        w = _workload(recipe, cell.seed)
        res = reference["result"] if profile == get("fp32") \
            else evaluate_profile(w, profile, reference=reference["result"])
    except Exception as e:      # noqa: BLE001
        return _failed(row, _one_line(e))
    metric, unit = _METRIC[w.kind]
    ref_v = reference["result"][metric]
    v = res[metric]
    sq = [s for s in res["sqnr_db"] if s is not None]
    row.update(status="ok", error=None, metric=metric, value=_num(v),
               drop=None if v is None or ref_v is None else _num((ref_v - v) * unit),
               overflows=int(sum(res["overflows"])), clipped=int(sum(res["clipped_inputs"])),
               min_sqnr_db=_num(min(sq)) if sq else None, weight_bytes=int(res["weight_bytes"]),
               energy_nj=_num(res["energy_nj_per_inference"]), time_ns=_num(res["time_ns_per_inference"]),
               seconds=time.perf_counter() - t0)
    return row


def _num(v):
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _row_head(cell: Cell) -> dict:
    row = {"model": cell.model, "profile": cell.profile}
    row.update(dict(cell.variant))
    row["seed"] = cell.seed
    return row


def _failed(row, error):
    row.update(status="failed", error=error, metric=None, value=None, drop=None, overflows=None,
               clipped=None, min_sqnr_db=None, weight_bytes=None, energy_nj=None, time_ns=None,
               seconds=None)
    return row


# ---------------------------------------------------------------------------
# The table on disk

def _table_format(fmt: str) -> str:
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"table: expected one of {list(TABLE_FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        try:
            import pyarrow  # noqa: F401
            return "parquet"
        except ImportError:
            return "jsonl"
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("table: 'parquet' needs pyarrow (pip install pyarrow); or use 'jsonl'") from None
    return fmt


def _parse_cell(s: str, column: str):
    if s == "":
        return None
    if column in _INT_COLUMNS:
        return int(s)
    if column in _FLOAT_COLUMNS:
        return float(s)
    if column in ("model", "profile", "status", "error", "metric"):
        return s
    if s in ("True", "False"):
        return s == "True"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def _csv_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def read_table(path) -> list:
    """The rows of a sweep table (``.parquet``, ``.jsonl`` or ``.csv``) as dicts.
    A torn last line (a sweep killed mid-write) is ignored."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(p).to_pylist()
    if p.suffix == ".jsonl":
        rows = []
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                rows.append(json.loads(line))
        return rows
    if p.suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as fh:
            text = fh.read()
        if text and not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        r = csv.DictReader(io.StringIO(text))
        return [{k: _parse_cell(v, k) for k, v in row.items()} for row in r]
    raise ValueError(f"path: expected a .parquet, .jsonl or .csv table, got {str(path)!r}")


class _Table:
    def __init__(self, path: Path, fmt: str, columns: list):
        self.path, self.fmt, self.columns = path, fmt, columns
        self.rows = read_table(path) if path.exists() else []
        if self.rows and list(self.rows[0]) != columns:
            raise ValueError(f"out: {path} holds a table with other columns ({list(self.rows[0])}); "
                             f"use another output folder for this grid")
        if path.exists() and fmt != "parquet":
            self._rewrite(self.rows)                 # drops a torn last line before appending

    def append(self, row):
        self.rows.append(row)
        if self.fmt == "parquet":
            self._rewrite(self.rows)
            return
        with self.path.open("a", encoding="utf-8", newline="") as fh:
            if self.fmt == "jsonl":
                fh.write(json.dumps(row) + "\n")
            else:
                if fh.tell() == 0:
                    csv.writer(fh).writerow(self.columns)
                csv.writer(fh).writerow([_csv_text(row[c]) for c in self.columns])
            fh.flush()
            os.fsync(fh.fileno())

    def _rewrite(self, rows):
        tmp = self.path.with_name(self.path.name + ".tmp")
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            pq.write_table(pa.Table.from_pylist(rows, schema=self._schema(rows)), tmp)
        else:
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                if self.fmt == "jsonl":
                    fh.writelines(json.dumps(r) + "\n" for r in rows)
                else:
                    w = csv.writer(fh)
                    w.writerow(self.columns)
                    w.writerows([_csv_text(r[c]) for c in self.columns] for r in rows)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _schema(self, rows):
        import pyarrow as pa
        fields = []
        for c in self.columns:
            if c in _INT_COLUMNS:
                t = pa.int64()
            elif c in _FLOAT_COLUMNS:
                t = pa.float64()
            elif c in ("model", "profile", "status", "error", "metric"):
                t = pa.string()
            else:
                vals = [r[c] for r in rows if r.get(c) is not None]
                t = pa.bool_() if vals and isinstance(vals[0], bool) else pa.int64() if vals and \
                    isinstance(vals[0], int) else pa.float64() if vals and isinstance(vals[0], float) \
                    else pa.string()
            fields.append(pa.field(c, t))
        return pa.schema(fields)

    def finish(self, order):
        """Rewrite in grid order (cells first, then any rows of cells no longer in the grid)."""
        pos = {k: i for i, k in enumerate(order)}
        rows = sorted(self.rows, key=lambda r: pos.get(_row_key(r, self.columns), len(pos)))
        self.rows = rows
        self._rewrite(rows)


def _row_key(row, columns) -> str:
    var = [c for c in columns if c not in _HEAD and c not in COLUMNS]
    return json.dumps([row["model"], row["profile"], [_key_value(row[c]) for c in var], row["seed"]])


# ---------------------------------------------------------------------------
# Progress

class _SweepProgress(Progress):
    """The study's bar with cells done / running / failed."""

    def __init__(self, total, stream, enabled, already=0):
        super().__init__(total, stream, enabled)
        self.done, self.failed, self.running, self.fresh = already, 0, 0, 0

    def cell(self, label, ok, running):
        self.fresh += 1
        self.failed += 0 if ok else 1
        self.running = running
        self.step(label, "")

    def show(self, label, sub=""):
        if not self.enabled:
            return
        width = 28
        fill = int(width * self.done / max(self.total, 1))
        el = time.perf_counter() - self.t0
        left = self.total - self.done
        eta = el / self.fresh * left if self.fresh and left else None
        line = (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} done, {self.running} running, "
                f"{self.failed} failed, {el:.1f} s" + (f", ~{eta:.0f} s left" if eta is not None else "")
                + (f"  {label}" if label else ""))
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(120) + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------
# The sweep

@dataclass
class SweepResult:
    """What :func:`sweep` did: the rows in grid order, the table and figure paths,
    and how many cells failed, ran now and were already in the table."""

    rows: list
    table: Path
    figures: list = field(default_factory=list)
    failed: int = 0
    ran: int = 0
    skipped: int = 0
    seconds: float = 0.0


def sweep(config, *, scheduler=None, out=None, table=None, progress: bool = False, stream=None,
          retry_failed: bool = False, figures=None) -> SweepResult:
    """Run every cell of ``config`` not yet in the output table; return the rows.

    Parameters
    ----------
    config : SweepConfig, str or Path
        A parsed config or the path of a sweep file.
    scheduler : None, "local:N", an address or a distributed.Client
        Where the cells run (see :func:`connect`).
    out : path, optional
        The output folder (default: the config's ``out``, else ``sweep-<name>``).
    table : {"auto", "parquet", "jsonl", "csv"}, optional
        Default: the config's.
    progress : bool
        A bar on ``stream`` (default stderr): cells done, running, failed, time left.
    retry_failed : bool
        Run cells again that the table holds as failed.
    figures : bool, optional
        ``sweep.png`` (needs matplotlib); default: the config's.

    Returns
    -------
    SweepResult
    """
    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    stream = stream or sys.stderr
    outdir = Path(out) if out is not None else (cfg.out or Path(f"sweep-{cfg.name}"))
    outdir.mkdir(parents=True, exist_ok=True)
    fmt = _table_format(table or cfg.table)
    path = outdir / f"results.{fmt}"
    tab = _Table(path, fmt, cfg.columns)
    cells = cfg.cells()
    order = [c.key for c in cells]
    have = {_row_key(r, cfg.columns): r for r in tab.rows}
    if retry_failed:
        kept = [r for r in tab.rows if r["status"] == "ok" or _row_key(r, cfg.columns) not in set(order)]
        if len(kept) != len(tab.rows):
            tab.rows = kept
            tab._rewrite(kept)
        have = {_row_key(r, cfg.columns): r for r in kept}
    todo = [c for c in cells if c.key not in have]
    bar = _SweepProgress(len(cells), stream, progress, already=len(cells) - len(todo))
    t0 = time.perf_counter()
    profiles = {p.name: p for p in cfg.profiles}
    models = {m.name: m for m in cfg.models}
    variants = {}
    for c in todo:
        k = (c.profile, c.variant)
        if k not in variants:
            try:
                variants[k] = variant_profile(profiles[c.profile], c.variant)
            except (ValueError, TypeError) as e:
                variants[k] = _one_line(e)
    failed_now = 0
    if todo:
        bar.show("", "")
        recipes = {m: models[m].recipe() for m in {c.model for c in todo}}
        with connect(scheduler, stream=stream if progress else None) as client:
            results = _run_serial(todo, recipes, variants, bar) if client is None else \
                _run_dask(client, todo, recipes, variants, bar)
            for row in results:
                tab.append(row)
                failed_now += row["status"] != "ok"
    tab.finish(order)
    rows = [r for r in tab.rows if _row_key(r, cfg.columns) in set(order)]
    res = SweepResult(rows, path, failed=sum(r["status"] != "ok" for r in rows), ran=len(todo),
                      skipped=len(cells) - len(todo), seconds=time.perf_counter() - t0)
    want_figs = cfg.figures if figures is None else figures
    if want_figs:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print('fixedpoint sweep: figure skipped: it needs matplotlib (pip install "fixedpoint[figures]")',
                  file=stream)
        else:
            res.figures = [_figure(cfg, rows, outdir / "sweep.png")]
    return res


def _run_serial(todo, recipes, variants, bar):
    refs = {}
    for c in todo:
        rk = (c.model, c.seed)
        if rk not in refs:
            refs[rk] = _reference_task(recipes[c.model], c.seed)
        row = _cell_task(recipes[c.model], c, variants[(c.profile, c.variant)], refs[rk])
        bar.cell(c.label, row["status"] == "ok", 0)
        yield row


def _run_dask(client, todo, recipes, variants, bar):
    from distributed import as_completed
    tag = hashlib.sha256(json.dumps([c.key for c in todo]).encode()).hexdigest()[:10]
    # (a list: Client.scatter reads a dict as {key: data})
    rfuts = {m: client.scatter([r], broadcast=True, hash=False)[0] for m, r in recipes.items()}
    refs = {}
    for c in todo:
        rk = (c.model, c.seed)
        if rk not in refs:
            refs[rk] = client.submit(one_thread, _reference_task, rfuts[c.model], c.seed, pure=False,
                                     key=f"fixedpoint-ref-{tag}-{c.model}-{c.seed}")
    futs = {}
    for i, c in enumerate(todo):
        f = client.submit(one_thread, _cell_task, rfuts[c.model], c, variants[(c.profile, c.variant)],
                          refs[(c.model, c.seed)], pure=False, key=f"fixedpoint-cell-{tag}-{i}")
        futs[f] = c
    keys = {f.key for f in futs}
    for fut in as_completed(futs):
        c = futs.pop(fut)
        row = fut.result()
        fut.release()
        bar.cell(c.label, row["status"] == "ok", running_tasks(client, keys))
        yield row


# ---------------------------------------------------------------------------
# The figure

def _figure(cfg: SweepConfig, rows, path: Path) -> Path:
    """The metric's drop against the first swept field, one line per profile
    (and per value of the other fields), one panel per model; without
    variants, one bar per profile."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(cfg.variants)
    models = [m.name for m in cfg.models]
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        ok = [r for r in rows if r["model"] == m and r["status"] == "ok" and r["drop"] is not None]
        metric = ok[0]["metric"] if ok else "metric"
        unit = "pp" if metric in ("accuracy", "agreement") else ""
        if keys:
            x_key = keys[0]
            xs = cfg.variants[x_key]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
            groups = {}
            for r in ok:
                g = (r["profile"],) + tuple(r[k] for k in keys[1:])
                groups.setdefault(g, {}).setdefault(_key_value(r[x_key]), []).append(r["drop"])
            for g, by_x in groups.items():
                pts = [(i, v, float(np.mean(by_x[_key_value(v)])), min(by_x[_key_value(v)]),
                        max(by_x[_key_value(v)])) for i, v in enumerate(xs) if _key_value(v) in by_x]
                xv = [p[1] if numeric else p[0] for p in pts]
                label = g[0] + "".join(f", {k}={v}" for k, v in zip(keys[1:], g[1:]))
                line, = ax.plot(xv, [p[2] for p in pts], marker="o", label=label)
                if len(cfg.seeds) > 1:
                    ax.fill_between(xv, [p[3] for p in pts], [p[4] for p in pts], alpha=0.15,
                                    color=line.get_color())
            if numeric:
                ax.set_xticks(xs, [str(v) for v in xs])
            else:
                ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=20)
            ax.set_xlabel(x_key)
        else:
            names = [p.name for p in cfg.profiles]
            vals = [float(np.mean([r["drop"] for r in ok if r["profile"] == n] or [np.nan])) for n in names]
            ax.bar(range(len(names)), vals, color="#3b6ea8")
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        failed = sum(1 for r in rows if r["model"] == m and r["status"] != "ok")
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_ylabel(f"{metric} drop vs fp32" + (f" ({unit})" if unit else ""))
        ax.set_title(f"{m}" + (f" ({failed} failed cells)" if failed else ""))
        if keys and ok:
            ax.legend(fontsize=7)
    fig.suptitle(f"sweep {cfg.name}: " + (f"drop against {keys[0]}" if keys else "drop per profile")
                 + (f", mean over seeds {cfg.seeds} (band: min-max)" if len(cfg.seeds) > 1 else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_rows(rows, columns) -> str:
    """The rows as an aligned text table (without the timing column)."""
    cols = [c for c in columns if c not in ("seconds", "error")]
    def cell(r, c):
        v = r.get(c)
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    table = [cols] + [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table)
