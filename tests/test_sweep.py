"""Sweeps: the grid file, rows per cell, resume, failed cells, the CLI, and the
same table whether cells run here or on Dask worker processes (one of them
killed in the middle)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest

from fixedpoint import profiles, scaleout, study
from fixedpoint import sweep as sw
from fixedpoint.cli import main

# The reliability grid: the MLP and the conv net (an ONNX graph), two integer
# profiles, five accumulator widths: 20 cells, one of which fails (the conv
# net's bias does not fit a 12-bit accumulator).
GRID = """
name = "grid"
profiles = ["ane-int8", "h100-int8"]
models = [{name = "mlp", limit = 90}, {name = "convnet", limit = 60}]
[variants]
"accumulator.bits" = [12, 16, 20, 24, 32]
"""


def _cfg(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _strip(rows):
    """Every column but the wall time."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def serial_grid(tmp_path_factory):
    d = tmp_path_factory.mktemp("serial")
    res = sw.sweep(sw.load_config(_cfg(d, GRID)), out=d / "out", table="jsonl", figures=False)
    return res


# ---------------------------------------------------------------------------
# the grid file

def test_cells_of_a_grid_and_variant_profiles(tmp_path):
    cfg = sw.load_config(_cfg(tmp_path, """
        profiles = ["ane-int8", "edge-int4"]
        seeds = [3, 4]
        models = ["mlp"]
        [variants]
        accumulator.bits = [16, 32]
        "weights.group_size" = [16, 32]
    """))
    cells = cfg.cells()
    assert len(cells) == 2 * 2 * 2 * 2
    assert cells[0].label == "mlp ane-int8 accumulator.bits=16 weights.group_size=16 seed=3"
    assert cfg.columns[:4] == ["model", "profile", "accumulator.bits", "weights.group_size"]
    p = sw.variant_profile(profiles.get("edge-int4"), (("accumulator.bits", 16), ("weights.group_size", 64)))
    assert (p.accumulator.bits, p.weights.group_size, p.weights.format.name) == (16, 64, "int4")
    assert p.accumulator.overflow == profiles.get("edge-int4").accumulator.overflow
    # a variant that makes an invalid profile says which field
    with pytest.raises(ValueError, match="group_size: only for granularity 'group'"):
        sw.variant_profile(profiles.get("ane-int8"), (("weights.group_size", 16),))
    # several fields of one table change together
    p = sw.variant_profile(profiles.get("ane-int8"), (("weights.granularity", "group"),
                                                      ("weights.group_size", 16), ("output.type", "float32"),
                                                      ("output.method", None)))
    assert (p.weights.group_size, p.output.type, p.output.method) == (16, "float32", None)


@pytest.mark.parametrize("text, message", [
    ('profiles = ["ane-int8"]\nmodel = ["mlp"]\n', r"s.toml: unknown field 'model'"),
    ('profiles = ["ane-int9"]\n', r"s.toml: profiles\[0\]: name: unknown profile 'ane-int9'"),
    ('profiles = []\n', r"s.toml: profiles: expected a non-empty list"),
    ('profiles = ["ane-int8"]\nmodels = ["resnet"]\n', r"s.toml: models\[0\].name: unknown model 'resnet'"),
    ('profiles = ["ane-int8"]\nmodels = [{name = "n", model = "n.onnx", data = "nope.npz"}]\n',
     r"s.toml: models\[0\].model: no such file"),
    ('profiles = ["ane-int8"]\n[variants]\n"accumulator.bitz" = [8]\n',
     r"s.toml: variants: 'accumulator.bitz': unknown field 'bitz' of accumulator"),
    ('profiles = ["ane-int8"]\n[variants]\n"weights" = [8]\n', r"s.toml: variants: 'weights': weights is a table"),
    ('profiles = ["ane-int8"]\n[variants]\n"accumulator.bits" = [8, "x"]\n',
     r"s.toml: variants.accumulator.bits: expected values of one kind"),
    ('profiles = ["ane-int8"]\n[variants]\n"accumulator.bits" = []\n',
     r"s.toml: variants.accumulator.bits: expected a non-empty list"),
    ('profiles = ["ane-int8"]\nseeds = [1, 1]\n', r"s.toml: seeds: a seed is listed twice"),
    ('profiles = ["ane-int8"]\ntable = "xlsx"\n', r"s.toml: table: expected one of"),
    ('profiles = ["ane-int8"\n', r"s.toml: not valid TOML"),
])
def test_bad_config_files_exit_2_naming_the_field(tmp_path, capsys, text, message):
    p = tmp_path / "s.toml"
    p.write_text(text)
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    import re
    assert re.search(r"^fixedpoint sweep: error: " + message, err[0]), err[0]


def test_scheduler_errors_exit_2(tmp_path, capsys):
    p = _cfg(tmp_path, 'profiles = ["ane-int8"]\nmodels = [{name = "mlp", limit = 20}]\n')
    assert main(["sweep", str(p), "--scheduler", "local:x", "--out", str(tmp_path / "o")]) == 2
    assert "scheduler: expected local:N with N >= 1" in capsys.readouterr().err
    assert main(["sweep", str(p), "--scheduler", "nowhere", "--out", str(tmp_path / "o")]) == 2
    assert "scheduler: expected none, local:N or a scheduler address" in capsys.readouterr().err


def test_without_dask_scheduler_says_how_to_get_it_and_the_rest_works(tmp_path):
    p = _cfg(tmp_path, 'profiles = ["ane-int8"]\nmodels = [{name = "mlp", limit = 20}]\n')
    code = textwrap.dedent(f"""
        import sys
        for m in ("dask", "distributed", "dask.array"):
            sys.modules[m] = None                      # as if not installed
        from fixedpoint.cli import main
        a = main(["sweep", {str(p)!r}, "--quiet", "--no-figures", "--out", {str(tmp_path / 'o1')!r},
                  "--scheduler", "local:2"])
        b = main(["sweep", {str(p)!r}, "--quiet", "--no-figures", "--out", {str(tmp_path / 'o2')!r}])
        c = main(["study", "--limit", "20", "--profiles", "ane-int8", "--quiet", "--no-figures",
                  "--out", {str(tmp_path / 'o3')!r}, "--scheduler", "local:2"])
        print("codes", a, b, c)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir())     # not the source tree: the installed package
    assert r.stdout.strip().splitlines()[-1] == "codes 2 0 2", r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert lines == ['fixedpoint sweep: error: scheduler: running on Dask needs dask and distributed: '
                     'pip install "fixedpoint[dask]"',
                     'fixedpoint study: error: scheduler: running on Dask needs dask and distributed: '
                     'pip install "fixedpoint[dask]"']


# ---------------------------------------------------------------------------
# rows, failures, resume, formats

@pytest.mark.slow
def test_serial_grid_rows(serial_grid):
    rows = serial_grid.rows
    assert len(rows) == 20 and serial_grid.ran == 20
    assert [(r["model"], r["profile"], r["accumulator.bits"]) for r in rows[:6]] == \
        [("mlp", "ane-int8", b) for b in (12, 16, 20, 24, 32)] + [("mlp", "h100-int8", 12)]
    by = {(r["model"], r["profile"], r["accumulator.bits"]): r for r in rows}
    # a wide accumulator changes nothing against the 32-bit one; a narrow one overflows
    for m in ("mlp", "convnet"):
        for p in ("ane-int8", "h100-int8"):
            wide, narrow = by[(m, p, 32)], by[(m, p, 16)]
            assert wide["status"] == "ok" and wide["overflows"] == 0
            assert narrow["overflows"] > 0 and narrow["value"] <= wide["value"]
            assert wide["metric"] == "accuracy" and wide["weight_bytes"] > 0
    # the conv net's bias does not fit a 12-bit register: a failed row with the reason
    bad = by[("convnet", "ane-int8", 12)]
    assert bad["status"] == "failed" and "does not fit the 12-bit accumulator" in bad["error"]
    assert serial_grid.failed == 1
    # drop: the float32 reference of the same model and seed minus the value, in pp
    ref = study.evaluate_profile(study.mlp_workload(limit=90), "fp32")["accuracy"]
    r = by[("mlp", "ane-int8", 16)]
    assert r["drop"] == pytest.approx((ref - r["value"]) * 100)


@pytest.mark.slow
def test_the_table_on_disk_is_the_rows(serial_grid):
    assert _strip(sw.read_table(serial_grid.table)) == _strip(serial_grid.rows)
    lines = serial_grid.table.read_text().splitlines()
    assert len(lines) == 20 and json.loads(lines[0])["model"] == "mlp"


SMALL = """
profiles = ["ane-int8", "h100-fp8"]
models = [{name = "mlp", limit = 40}]
seeds = [0, 1]
[variants]
"accumulator.bits" = [16, 32]
"""


def test_resume_skips_rows_in_the_table_and_survives_a_torn_line(tmp_path):
    cfg = sw.load_config(_cfg(tmp_path, SMALL))
    first = sw.sweep(cfg, out=tmp_path / "o", table="jsonl", figures=False)
    assert first.ran == 8 and first.failed == 4          # h100-fp8 has no accumulator.bits
    table = first.table
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join(lines[:5]) + lines[5][:17])   # killed while writing the 6th row
    again = sw.sweep(cfg, out=tmp_path / "o", table="jsonl", figures=False)
    assert (again.ran, again.skipped) == (3, 5)
    assert _strip(again.rows) == _strip(first.rows)
    assert _strip(sw.read_table(table)) == _strip(first.rows)
    done = sw.sweep(cfg, out=tmp_path / "o", table="jsonl", figures=False)
    assert done.ran == 0 and _strip(done.rows) == _strip(first.rows)
    # failed cells run again only when asked
    retry = sw.sweep(cfg, out=tmp_path / "o", table="jsonl", figures=False, retry_failed=True)
    assert retry.ran == 4 and _strip(retry.rows) == _strip(first.rows)
    # another grid into the same folder is refused, not mixed in
    other = sw.load_config(_cfg(tmp_path, 'profiles = ["ane-int8"]\nmodels = [{name = "mlp", limit = 40}]\n',
                                "t.toml"))
    with pytest.raises(ValueError, match="^out: .* holds a table with other columns"):
        sw.sweep(other, out=tmp_path / "o", table="jsonl", figures=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_formats_hold_the_same_rows(tmp_path, fmt):
    if fmt == "parquet":
        from extras import need
        need("pyarrow", "pip install pyarrow")
    cfg = sw.load_config(_cfg(tmp_path, SMALL))
    ref = sw.sweep(cfg, out=tmp_path / "j", table="jsonl", figures=False)
    got = sw.sweep(cfg, out=tmp_path / "f", table=fmt, figures=False)
    assert got.table.name == f"results.{fmt}"
    assert _strip(sw.read_table(got.table)) == _strip(ref.rows)
    again = sw.sweep(cfg, out=tmp_path / "f", table=fmt, figures=False)
    assert again.ran == 0 and _strip(again.rows) == _strip(ref.rows)


def test_a_model_that_fails_is_failed_rows_and_the_rest_runs(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx graph")
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3), np.float32))
    p = _cfg(tmp_path, """
        profiles = ["ane-int8"]
        models = [{name = "bad", model = "bad.onnx", data = "bad.npz"}, {name = "mlp", limit = 30}]
    """)
    assert main(["sweep", str(p), "--quiet", "--no-figures", "--out", str(tmp_path / "o")]) == 1
    io = capsys.readouterr()
    table = next((tmp_path / "o").glob("results.*"))
    assert io.err.strip().splitlines() == [f"fixedpoint sweep: 1 of 2 cells failed (their error is in {table})"]
    rows = sw.read_table(table)
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[0]["error"].startswith("ValueError: model: ")


def test_figure_and_its_absence(tmp_path, monkeypatch, capsys):
    from extras import need
    need("matplotlib", 'pip install "fixedpoint[figures]"')
    cfg = sw.load_config(_cfg(tmp_path, SMALL))
    res = sw.sweep(cfg, out=tmp_path / "o", table="jsonl")
    assert [f.name for f in res.figures] == ["sweep.png"] and res.figures[0].stat().st_size > 10000
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    res = sw.sweep(cfg, out=tmp_path / "o", table="jsonl", stream=sys.stderr)
    assert res.figures == []
    assert "figure skipped: it needs matplotlib" in capsys.readouterr().err


def test_progress_line(tmp_path):
    import io
    cfg = sw.load_config(_cfg(tmp_path, 'profiles = ["ane-int8"]\nmodels = [{name = "mlp", limit = 20}]\n'
                                        '[variants]\n"accumulator.bits" = [7, 32]\n'))
    s = io.StringIO()
    sw.sweep(cfg, out=tmp_path / "o", table="jsonl", figures=False, progress=True, stream=s)
    last = s.getvalue().strip().splitlines()[-1]
    assert "2/2 done, 0 running, 1 failed" in last


# ---------------------------------------------------------------------------
# Dask: the same table on worker processes, and a worker killed mid-sweep

distributed = pytest.importorskip("distributed") if os.environ.get("FIXEDPOINT_REQUIRE_EXTRAS") != "1" \
    else __import__("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=50) as c, distributed.Client(c) as cl:
        yield cl


@pytest.mark.slow
def test_two_worker_processes_give_the_serial_table(serial_grid, cluster, tmp_path):
    cfg = sw.load_config(_cfg(tmp_path, GRID))
    res = sw.sweep(cfg, scheduler=cluster, out=tmp_path / "o", table="jsonl", figures=False)
    assert _strip(res.rows) == _strip(serial_grid.rows)
    assert _strip(sw.read_table(res.table)) == _strip(serial_grid.rows)
    pids = cluster.run(os.getpid)
    assert len(set(pids.values()) | {os.getpid()}) == 3        # two other processes did the work


def test_study_on_the_workers_matches_the_serial_study(cluster):
    w = study.mlp_workload(limit=80)
    here = study.json_ready(study.run_study(["ane-int8", "edge-int4"], w))
    there = study.json_ready(study.run_study(["ane-int8", "edge-int4"], w, scheduler=cluster))
    for r in (here, there):
        r.pop("seconds")
        for p in r["profiles"].values():
            p.pop("seconds")
    assert here == there


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_loses_and_repeats_no_row(serial_grid, tmp_path):
    cfg = sw.load_config(_cfg(tmp_path, GRID))
    out = tmp_path / "o"
    killed = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as c, distributed.Client(c) as client:
        pids = client.run(os.getpid)

        def killer():
            deadline = time.time() + 120
            while time.time() < deadline and not killed:
                try:
                    busy = [a for a, ks in client.processing().items()
                            if any("fixedpoint-cell" in str(k) for k in ks)]
                    rows = len(sw.read_table(out / "results.jsonl")) if (out / "results.jsonl").exists() else 0
                except Exception:      # noqa: BLE001 - the table may be mid-write
                    busy, rows = [], 0
                if busy and rows >= 1:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append((busy[0], rows))
                    return
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        res = sw.sweep(cfg, scheduler=client, out=out, table="jsonl", figures=False)
        t.join()
    assert killed, "no worker was killed while cells ran"
    assert killed[0][1] < 20
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 20
    assert _strip(res.rows) == _strip(serial_grid.rows)
    assert _strip(sw.read_table(out / "results.jsonl")) == _strip(serial_grid.rows)


def test_connect_parses_schedulers():
    with scaleout.connect(None) as c:
        assert c is None
    with scaleout.connect("none") as c:
        assert c is None
    with pytest.raises(TypeError, match="^scheduler: expected None"):
        with scaleout.connect(3):
            pass


def test_docstring_examples():
    import doctest
    for mod in (sw, scaleout):
        result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, mod.__name__
