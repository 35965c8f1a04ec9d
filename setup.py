"""Build script: the list of compiled extensions and an OpenMP probe.

Metadata lives in pyproject.toml.  The extensions are compiled with OpenMP when
the compiler accepts ``-fopenmp`` and serially otherwise.  Set
``FIXEDPOINT_SANITIZE=1`` to build with ``-fsanitize=address,undefined``, and
``FIXEDPOINT_NO_SIMD=1`` to compile every x86 intrinsic and function clone out
(the portable C kernels alone, as on a CPU without AVX2 or on arm64).
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["_int", "_fp8", "_tensorcore", "_quant", "_mx", "_vector"]


def _compiler_accepts(compiler, flags):
    """Compile and link a tiny OpenMP program with ``flags``; True on success."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        omp = [] if os.environ.get("FIXEDPOINT_NO_OPENMP") else ["-fopenmp"]
        if omp and not _compiler_accepts(self.compiler, omp):
            print("fixedpoint: compiler has no OpenMP; building serial kernels", file=sys.stderr)
            omp = []
        # -ffp-contract=off: no compiler may fuse a multiply and an add into one
        # rounding (an FMA), which would change bits
        extra = (["-O3", "-fno-strict-aliasing", "-ffp-contract=off"]
                 if self.compiler.compiler_type == "unix" else [])
        link = []
        if os.environ.get("FIXEDPOINT_SANITIZE"):
            san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                   "-fno-omit-frame-pointer", "-g"]
            extra += san
            link += san
        if os.environ.get("FIXEDPOINT_NO_SIMD"):
            extra += ["-DFP_NO_AVX2", "-DFP_NO_AVX512", "-DFP_NO_CLONES"]
        for ext in self.extensions:
            ext.extra_compile_args = extra + omp
            ext.extra_link_args = link + omp
        super().build_extensions()


extensions = [
    Extension(
        f"fixedpoint.{name}",
        [f"src/{name}.pyx"],
        include_dirs=["src", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
