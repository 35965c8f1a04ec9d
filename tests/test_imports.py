"""The architecture check of .ci/imports.py: the package passes it, and it
catches each kind of problem on a small package written here."""
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / ".ci" / "imports.py"


def _check(pkg=None):
    return subprocess.run([sys.executable, str(SCRIPT)] + ([str(pkg)] if pkg else []),
                          capture_output=True, text=True)


def test_the_package_has_no_cycle_or_private_import():
    r = _check()
    assert r.returncode == 0, r.stdout


def test_the_check_can_fail(tmp_path):
    pk = tmp_path / "pk"
    pk.mkdir()
    (pk / "__init__.py").write_text("from .a import f\nfrom .d import b\n")
    (pk / "a.py").write_text("from .b import g\n\ndef f():\n    pass\n")
    (pk / "b.py").write_text("def g():\n    from .a import f\n")          # a lazy import counts
    (pk / "c.py").write_text("from . import helper\nfrom .a import _p\n")
    (pk / "d.py").write_text("def b():\n    pass\n")
    r = _check(pk)
    assert r.returncode == 1
    assert "import cycle: pk.a -> pk.b -> pk.a" in r.stdout
    assert "pk.c: imports the private name _p from pk.a" in r.stdout
    assert "pk.c: imports 'helper' from the package __init__" in r.stdout
    assert "pk.b: the name hides the submodule of the same name" in r.stdout
