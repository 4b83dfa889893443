"""The oldest Python that pyproject.toml promises runs the code: every file compiles on it, and every
name the code takes from the standard library exists there (`hashlib.file_digest` came in 3.11)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("qformer", "train", "demo") for p in (ROOT / folder).rglob("*.py"))


def floor() -> tuple[int, int]:
    found = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml names no requires-python floor"
    return int(found.group(1)), int(found.group(2))


def interpreter(version: tuple[int, int]) -> str | None:
    """An interpreter of that version that runs (pyenv's shims exist for versions not selected)."""
    candidates = [*sorted(Path.home().glob(f".pyenv/versions/{version[0]}.{version[1]}.*/bin/python")),
                  shutil.which(f"python{version[0]}.{version[1]}")]
    for candidate in filter(None, candidates):
        probe = subprocess.run([str(candidate), "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == str(version):
            return str(candidate)
    return None


def standard_library_names(path: Path) -> set[tuple[str, str]]:
    """(module, name) for `from m import name` and `m.name` where m is a standard-library module."""
    tree, used, aliases = ast.parse(path.read_text(encoding="utf-8")), set(), {}
    stdlib = sys.stdlib_module_names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in stdlib:
                    top = alias.name.split(".")[0]
                    aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] in stdlib:
            used |= {(node.module,
                      alias.name) for alias in node.names if alias.name != "*" and node.module != "__future__"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.add((aliases[node.value.id], node.attr))
    return used


def test_the_code_reads_as_the_oldest_python_it_promises():
    for path in SOURCES:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=floor())


def test_every_standard_library_name_exists_on_the_oldest_python_it_promises():
    python = interpreter(floor())
    if python is None:
        pytest.skip(f"no Python {floor()[0]}.{floor()[1]} on this machine to check against")
    used = sorted({pair for path in SOURCES for pair in standard_library_names(path)})
    assert ("hashlib", "sha256") in used  # the collection sees what the code uses
    check = ("import importlib, json, sys\n"
             "missing = []\n"
             "for module, name in json.loads(sys.stdin.read()):\n"
             "    try:\n"
             "        found = importlib.import_module(module)\n"
             "    except ImportError:\n"
             "        missing.append([module, None]); continue\n"
             "    if not hasattr(found, name):\n"
             "        try: importlib.import_module(module + '.' + name)\n"
             "        except ImportError: missing.append([module, name])\n"
             "print(json.dumps(missing))\n")
    done = subprocess.run([python, "-c", check], input=json.dumps(used), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"not in Python {floor()}: {done.stdout}"
    # and every file compiles there
    compiled = subprocess.run([python, "-c",
                               "import sys, ast\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec')",
                               *map(str, SOURCES)], capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr
