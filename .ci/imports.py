"""CI step: the package's import graph keeps the architecture easy to see.

Fails (exit 1, one line per problem) when
* a module imports, directly or through others, a module that imports it back (a cycle);
* a module imports the package ``__init__`` (``from . import x`` of a name that is
  not a submodule, ``from fixedpoint import ...``, ``import fixedpoint``);
* a module imports a private (underscore) name from another module of the package;
* a public name of ``fixedpoint/__init__.py`` hides a submodule of the same name.

Compiled modules (``_int``, ``_fp8``, ...) are private modules; importing them is
fine.  Lazy imports inside functions count as imports.
"""
import ast
import pathlib
import sys

PKG = (pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else
       pathlib.Path(__file__).resolve().parent.parent / "fixedpoint").resolve()


def modules():
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = p
    return out


def resolve(mod, node, is_pkg):
    """The absolute module a relative ``ImportFrom`` names."""
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def main():
    mods = modules()
    problems, edges = [], {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == PKG.name and mod != PKG.name:
                        problems.append(f"{mod}: imports the package __init__ (import fixedpoint)")
                    if a.name.startswith(PKG.name + ".") and a.name in mods:
                        edges[mod].add(a.name)
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 0:
                if node.module == PKG.name and mod != PKG.name:
                    problems.append(f"{mod}: imports the package __init__ (from fixedpoint import ...)")
                if not (node.module or "").startswith(PKG.name):
                    continue
                target = node.module
            else:
                target = resolve(mod, node, is_pkg)
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in mods or (PKG.parent / (sub.replace(".", "/") + ".pyx")).exists() \
                        or list(PKG.glob(a.name + ".*.so")) or a.name.startswith("_") and \
                        list((PKG.parent / "src").glob(a.name + ".pyx")):
                    if sub in mods:
                        edges[mod].add(sub)
                    continue
                if target == PKG.name and mod != PKG.name and not is_pkg:
                    problems.append(f"{mod}: imports {a.name!r} from the package __init__")
                elif target in mods:
                    edges[mod].add(target)
                    private = a.name.startswith("_") and not a.name.endswith("__")
                    if private and target != mod and target != mod.rsplit(".", 1)[0]:
                        problems.append(f"{mod}: imports the private name {a.name} from {target}")
    # cycles: depth-first search over the module graph
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if n == m or n not in edges:
                continue
            if state.get(n) == 1:
                cyc = stack[stack.index(n):] + [n]
                if not (len(cyc) == 3 and mods[cyc[1]].name == "__init__.py"):
                    problems.append("import cycle: " + " -> ".join(cyc))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state and mods[m].name != "__init__.py":
            visit(m)
    # public names of the package that hide a submodule
    init = ast.parse((PKG / "__init__.py").read_text())
    for node in ast.walk(init):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for a in node.names:
                name = a.asname or a.name
                if f"{PKG.name}.{name}" in mods and name != node.module:
                    problems.append(f"{PKG.name}.{name}: the name hides the submodule of the same name")
    for p in problems:
        print(p)
    print(f"imports: {len(mods)} modules, {sum(len(e) for e in edges.values())} import edges, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
