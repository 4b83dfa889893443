"""The README's first command prints what the README says it prints."""

import re
import shlex
from pathlib import Path

from qformer.cli import main

ROOT = Path(__file__).resolve().parent.parent


def first_command_and_output() -> tuple[list[list[str]], list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = "bash scripts/setup.sh && .venv/bin/qformer"
    command = next(line for line in readme.splitlines() if line.startswith(first))
    runs = [shlex.split(part.strip())[1:] for part in command.split("&&")[1:]]  # each `.venv/bin/qformer ...`
    printed = re.search(r"The first command prints.*?```\n(.*?)```", readme, re.S).group(1)
    return runs, printed.strip().splitlines()


def test_the_readmes_first_command_prints_what_the_readme_shows(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs, expected = first_command_and_output()
    assert [run[0] for run in runs] == ["caption", "ask", "wildlife"]
    for run in runs:
        args = []
        for word in run:  # the shell expands samples/*.jpg, in this order
            args += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(word)) if "*" in word else [word]
        assert main(args) == 0
    assert capsys.readouterr().out.strip().splitlines() == expected


def test_every_python_block_of_the_readme_runs_as_written(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    (tmp_path / "samples").symlink_to(ROOT / "samples")  # what the blocks write lands here, not in the clone
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "an Egyptian cat grounded" in printed and "a blue square and a red circle" in printed
    assert (tmp_path / "runs" / "my-bridge" / "model.safetensors").is_file()
