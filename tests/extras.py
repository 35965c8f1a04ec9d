"""Optional extras in the tests: skip when missing, fail when CI says they must be there.

CI (``.ci/run``) installs every extra the tests use and sets
``FIXEDPOINT_REQUIRE_EXTRAS=1``; then a missing package fails the test instead
of skipping it, so a forgotten install step cannot turn into a green run that
tested nothing.
"""
import importlib
import os

import pytest

STRICT = os.environ.get("FIXEDPOINT_REQUIRE_EXTRAS") == "1"


def need(module: str, install: str):
    """Import ``module`` or skip (``install`` says how to get it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if STRICT:
            raise
        pytest.skip(f"{module} is not installed ({install}); CI installs it",
                    allow_module_level=True)


def qemu_haswell() -> str:
    """The QEMU user-mode emulator that runs x86 code on a Haswell CPU model
    (AVX2, no AVX-512, no VNNI), or skip (CI installs it: a missing one fails)."""
    import platform
    import shutil
    import sys
    qemu = shutil.which("qemu-x86_64")
    if qemu is None or platform.machine() != "x86_64" or sys.platform != "linux":
        if STRICT and platform.machine() == "x86_64":
            pytest.fail("qemu-x86_64 is missing (apt-get install -y qemu-user)")
        pytest.skip("needs qemu-x86_64 on an x86_64 Linux host (apt-get install -y qemu-user)")
    return qemu


def skip_under_asan():
    """Skip a memory measurement in the sanitizer run (.ci/sanitize preloads
    ASan, whose shadow memory, quarantine and allocator limits change what
    memory measures); the normal run has it."""
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("AddressSanitizer's shadow memory and quarantine change what memory measures")
