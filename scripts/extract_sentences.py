"""Extract the study's evaluation text once into fixedpoint/data/sentences.json.

English prose written by people: sentences from the docstrings of the CPython standard
library (Python Software Foundation License).  The shipped file was produced by CPython
3.11.7; another version of Python has other docstrings and gives another file.

    python scripts/extract_sentences.py

Deterministic for a given Python: the source files of a fixed list of standard-library
modules are parsed with ``ast`` (nothing is imported or executed), every module, class
and function docstring is cleaned (``inspect.cleandoc``) and cut into paragraphs, and the
paragraphs that look like code, examples, lists, tables or headings are dropped (doctest
``>>>`` lines, indented blocks, ``::``, bullets, ``Args:``-style headings, underlines).  The
rest is split into sentences at ``.``/``?``/``!`` followed by a capital letter (abbreviations
such as "e.g." protected), and a sentence is kept when it has 6 to 40 words, starts with a
capital letter, ends with a full stop, question or exclamation mark, and has no code-like
token (identifiers with ``_`` or dots, calls, operators, brackets, backquotes, CamelCase)
and is not a developer's note (``XXX``, ``TODO``).
Duplicates are removed (ignoring case), the survivors sorted, and ``N_SENTENCES`` of them
drawn with ``random.Random(SEED)``, in the drawn order, so that any prefix (``--limit``) is a
mixed sample of modules rather than an alphabetical run.
"""
import ast
import inspect
import json
import random
import re
import sys
import sysconfig
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "fixedpoint" / "data" / "sentences.json"
SEED = 20261203
N_SENTENCES = 400
MIN_WORDS, MAX_WORDS = 6, 40

# Standard-library modules with prose docstrings (paths under the stdlib folder).
MODULES = [
    "argparse.py", "ast.py", "asyncio/base_events.py", "asyncio/events.py", "asyncio/futures.py",
    "asyncio/locks.py", "asyncio/queues.py", "asyncio/streams.py", "asyncio/tasks.py",
    "base64.py", "bisect.py", "bz2.py", "calendar.py", "cmd.py", "codecs.py",
    "collections/__init__.py", "concurrent/futures/_base.py", "concurrent/futures/process.py",
    "configparser.py", "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "datetime.py",
    "decimal.py", "_pydecimal.py", "difflib.py", "dis.py", "doctest.py", "email/message.py",
    "email/parser.py", "email/utils.py", "enum.py", "filecmp.py", "fileinput.py", "fnmatch.py",
    "fractions.py", "ftplib.py", "functools.py", "getopt.py", "gettext.py", "glob.py", "gzip.py",
    "hashlib.py", "heapq.py", "hmac.py", "html/parser.py", "http/client.py", "http/cookiejar.py",
    "http/server.py", "imaplib.py", "importlib/__init__.py", "importlib/abc.py",
    "importlib/util.py", "inspect.py", "ipaddress.py", "json/__init__.py", "json/decoder.py",
    "json/encoder.py", "locale.py", "logging/__init__.py", "logging/handlers.py", "lzma.py",
    "mailbox.py", "mimetypes.py", "multiprocessing/pool.py", "multiprocessing/process.py",
    "netrc.py", "numbers.py", "operator.py", "optparse.py", "os.py", "pathlib.py", "pdb.py",
    "pickle.py", "pickletools.py", "pkgutil.py", "platform.py", "plistlib.py", "poplib.py",
    "pprint.py", "profile.py", "pstats.py", "pydoc.py", "queue.py", "quopri.py", "random.py",
    "reprlib.py", "sched.py", "secrets.py", "selectors.py", "shelve.py", "shlex.py", "shutil.py",
    "site.py", "smtplib.py", "socket.py", "socketserver.py", "ssl.py", "statistics.py",
    "string.py", "subprocess.py", "sysconfig.py", "tabnanny.py", "tarfile.py", "tempfile.py",
    "textwrap.py", "threading.py", "timeit.py", "tokenize.py", "trace.py", "traceback.py",
    "turtle.py", "typing.py", "unittest/case.py", "unittest/loader.py", "unittest/mock.py",
    "unittest/runner.py", "urllib/parse.py", "urllib/request.py", "uuid.py", "warnings.py",
    "wave.py", "weakref.py", "webbrowser.py", "xml/dom/minidom.py", "xml/etree/ElementTree.py",
    "zipfile.py", "zipimport.py",
]

ABBREVIATIONS = ["e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Mrs.", "Dr.", "No.", "approx."]
_PROTECT = "\x00"
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_BULLET = re.compile(r"^\s*([-*+\u2022]|\d+[.)]|[a-z][.)]|\(\w+\))\s")
_HEADING = re.compile(r"^\s*[A-Z][A-Za-z ]{0,30}:\s*$")
_UNDERLINE = re.compile(r"^\s*([-=~^*])\1{2,}\s*$")
_CODE_TOKEN = re.compile(
    r"[_`=<>{}\[\]\\|#@$^~*/]"          # identifiers, markup, operators, paths
    r"|\w\(|\)\w|\(\)"                   # calls
    r"|\w\.\w"                           # dotted names (os.path), versions, file names
    r"|\b[a-z]+[A-Z]\w*"                 # camelCase
    r"|\b[A-Z][a-z]+[A-Z]\w*"            # CamelCase class names
    r"|\b(None|True|False|self|cls|args|kwargs|str|int|bytes|dict|tuple)\b"
    r"|--|->|:\s*$|'[^']*'|\""
    r"|\b(XXX|TODO|FIXME)\b")                # developers' notes to themselves


def docstrings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield inspect.cleandoc(doc)


def prose_paragraphs(doc: str):
    for para in re.split(r"\n\s*\n", doc):
        lines = para.splitlines()
        if not lines:
            continue
        if any(line.lstrip().startswith((">>>", "...")) or line[:1].isspace()
               or "::" in line or _BULLET.match(line) or _UNDERLINE.match(line)
               or _HEADING.match(line) for line in lines):
            continue
        yield " ".join(line.strip() for line in lines)


def sentences_of(paragraph: str):
    text = re.sub(r"\s+", " ", paragraph).strip()
    for a in ABBREVIATIONS:
        text = text.replace(a, a.replace(".", _PROTECT))
    for s in _SPLIT.split(text):
        yield s.replace(_PROTECT, ".").strip()


def keep(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not sentence[0].isupper() or sentence[-1] not in ".?!" or sentence.endswith(".."):
        return False
    if _CODE_TOKEN.search(sentence) or not sentence.isascii():
        return False
    letters = sum(c.isalpha() for c in sentence)
    return letters >= 0.75 * len(sentence.replace(" ", ""))


def main():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = {}
    for rel in MODULES:
        path = stdlib / rel
        if not path.is_file():
            print(f"skipped {rel}: not in this Python ({sys.version.split()[0]})")
            continue
        for doc in docstrings(path):
            for para in prose_paragraphs(doc):
                for s in sentences_of(para):
                    if keep(s):
                        found.setdefault(s.lower(), s)
    pool = sorted(found.values())
    chosen = random.Random(SEED).sample(pool, min(N_SENTENCES, len(pool)))
    OUT.write_text(json.dumps(chosen, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"Python {sys.version.split()[0]}: {len(pool)} candidate sentences from "
          f"{len(MODULES)} modules; wrote {len(chosen)} to {OUT}")


if __name__ == "__main__":
    main()
