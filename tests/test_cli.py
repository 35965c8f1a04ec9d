"""The command line entry points run and print the recorded hardware facts."""
import subprocess
import sys
import tempfile

# run outside the source tree, so that the installed (compiled) package is used
CWD = tempfile.gettempdir()


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fixedpoint", *args], check=True, cwd=CWD,
                          capture_output=True, text=True, timeout=300).stdout


def test_demo_prints_the_recorded_hopper_result():
    out = _run("demo")
    # int_mm_order.npz, K = 278528 up_then_down: the GPU returned -116391937
    assert "Hopper (saturate per block of 16) -116391937" in out
    assert "42 * 38 = 1596" in out and "wrap 60" in out
    assert "465  0x7F (nan)   0x7E (448)" in out


def test_info_lists_formats():
    out = _run("info")
    assert "e4m3      bias  7  max 448" in out
    assert "OpenMP:" in out


def test_bad_subcommand():
    r = subprocess.run([sys.executable, "-m", "fixedpoint", "nope"], cwd=CWD, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "invalid choice" in r.stderr
