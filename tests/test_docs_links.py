"""The documents stay true to the repository.

* Every "docs/semantics.md section N" cited in the code, examples and documents
  names a section that exists.
* tests/data/README.md describes every file in tests/data, and every file it
  names exists.
* Nothing in the package, its C sources, the tests or the benchmarks refers to
  the golden set outside the repository or to its notes: the project must not
  depend on them.
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEMANTICS = ROOT / "docs" / "semantics.md"
DATA = ROOT / "tests" / "data"
THIS = pathlib.Path(__file__).resolve()

TEXT_SUFFIXES = {".py", ".pyx", ".pxd", ".pyi", ".h", ".c", ".v", ".md", ".toml", ".json", ".txt",
                 ".cfg", ".ini", ".yml", ".yaml", ".sh"}
GENERATED = {"_fp8.c", "_int.c", "_quant.c", "_tensorcore.c", "_mx.c"}     # Cython output, not ours

# "docs/semantics.md section 4", "docs/semantics.md sections 1-2", "... sections 3 and 5"
CITATION = re.compile(r"docs/semantics\.md,?\s+sections?\s+(\d+(?:\s*(?:-|–|,|and|to)\s*\d+)*)")
SECTION_HEADING = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
# a data file named in prose: a bare name (in tests/data) or a path from the repository root
DATA_FILE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-][\w.-]*\.(?:npz|npy|json|toml|onnx|csv|txt|"
                       r"bin|safetensors|pt|h5|gz|zip))(?![\w-])")
FORBIDDEN = re.compile(r"\.\./shared|/work/shared|SEMANTICS\.md")


def _text_files(*tops):
    for top in tops:
        path = ROOT / top
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in candidates:
            if (f.is_file() and f.suffix in TEXT_SUFFIXES and f.name not in GENERATED
                    and "__pycache__" not in f.parts):
                yield f


def _sections_cited(text):
    """Section numbers cited by a text (ranges expanded)."""
    found = []
    for m in CITATION.finditer(text):
        numbers = m.group(1)
        for part in re.split(r"\s*(?:,|and)\s*", numbers):
            bounds = [int(x) for x in re.split(r"\s*(?:-|–|to)\s*", part)]
            found.extend(range(bounds[0], bounds[-1] + 1))
    return found


def test_citation_parser():
    text = ("see docs/semantics.md section 4; docs/semantics.md sections 1-2 and "
            "docs/semantics.md sections 3 and 5 (not SEMANTICS section 9)")
    assert _sections_cited(text) == [4, 1, 2, 3, 5]


def test_semantics_sections_are_numbered_in_order():
    numbers = [int(n) for n in SECTION_HEADING.findall(SEMANTICS.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= 9, "docs/semantics.md keeps sections 1 to 9"


def test_every_cited_section_exists():
    existing = {int(n) for n in SECTION_HEADING.findall(SEMANTICS.read_text(encoding="utf-8"))}
    cited, bad = 0, []
    for f in _text_files("fixedpoint", "examples", "docs", "src", "tests", "benchmarks",
                         "README.md"):
        if f == THIS:
            continue            # the parser's own examples
        for n in _sections_cited(f.read_text(encoding="utf-8", errors="replace")):
            cited += 1
            if n not in existing:
                bad.append(f"{f.relative_to(ROOT)}: section {n}")
    assert not bad, f"citations of sections that docs/semantics.md does not have: {bad}"
    assert cited >= 5, f"only {cited} citations found: the scan is not finding them"


def _data_readme():
    return (DATA / "README.md").read_text(encoding="utf-8")


def _resolve(name):
    """Where a file named in tests/data/README.md must be: a bare name in tests/data, a
    path starting with a folder of the repository from its root; None for a path
    inside something else (a package's files, say)."""
    if "/" not in name:
        return DATA / name
    first = name.split("/", 1)[0]
    return ROOT / name if (ROOT / first).is_dir() else None


def test_every_file_named_in_the_data_readme_exists():
    named = set(DATA_FILE.findall(_data_readme()))
    assert len(named) >= 5, named
    missing = sorted(n for n in named if _resolve(n) is not None and not _resolve(n).is_file())
    assert not missing, f"tests/data/README.md names files that do not exist: {missing}"


def test_every_data_file_has_a_section_in_the_readme():
    headings = [line for line in _data_readme().splitlines() if line.startswith("## ")]
    files = sorted(f.name for f in DATA.iterdir()
                   if f.is_file() and f.name != "README.md" and not f.name.startswith("."))
    assert files, "tests/data is empty"
    undescribed = [name for name in files
                   if not any(re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", h)
                              for h in headings)]
    assert not undescribed, f"files in tests/data without a section in its README: {undescribed}"


def test_nothing_depends_on_the_golden_set_outside_the_repository():
    bad = []
    for f in _text_files("fixedpoint", "src", "tests", "benchmarks"):
        if f == THIS:
            continue            # this file has to spell the patterns out
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if FORBIDDEN.search(line):
                bad.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "references outside the repository:\n" + "\n".join(bad)
