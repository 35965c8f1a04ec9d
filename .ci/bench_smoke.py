"""Run every asv benchmark once, at its first and last parameter combination.

`asv check` imports the suites and checks their parameters but calls no
benchmark, so a suite written against an older API would only fail when
someone runs asv.  This calls each time_/peakmem_/track_ method once (small
sizes unless FIXEDPOINT_BENCH_LARGE=1) and fails on any exception other than
the NotImplementedError by which a suite skips a combination.
"""
import importlib
import importlib.util
import inspect
import itertools
import pathlib
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_benchmarks_package():
    """The checkout's benchmarks/ as the package `benchmarks`, without putting
    the checkout on sys.path (its uncompiled fixedpoint/ would shadow the
    installed package that the suites measure)."""
    spec = importlib.util.spec_from_file_location(
        "benchmarks", ROOT / "benchmarks" / "__init__.py",
        submodule_search_locations=[str(ROOT / "benchmarks")])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = pkg
    spec.loader.exec_module(pkg)


def main() -> int:
    _load_benchmarks_package()
    failures = calls = 0
    for f in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        mod = importlib.import_module("benchmarks." + f.stem)
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__:
                continue
            params = getattr(cls, "params", [])
            if params and not isinstance(params[0], (list, tuple)):
                params = [params]
            combos = list(itertools.product(*params)) if params else [()]
            for combo in dict.fromkeys(combos[:1] + combos[-1:]):
                obj = cls()
                try:
                    if hasattr(obj, "setup"):
                        obj.setup(*combo)
                except NotImplementedError:
                    continue
                for m in dir(obj):
                    if not m.startswith(("time_", "peakmem_", "track_", "mem_")):
                        continue
                    calls += 1
                    try:
                        getattr(obj, m)(*combo)
                    except NotImplementedError:
                        pass
                    except Exception:       # noqa: BLE001 - report every failing benchmark
                        failures += 1
                        print(f"FAIL {f.stem}.{name}.{m}{combo}")
                        traceback.print_exc(limit=3)
    print(f"benchmarks: {calls} calls, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
