"""The README and docs/: the commands they give are the ones CI runs, every relative link and anchor
resolves, and a documented command that needs an optional package says so in one line, first."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*/README.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The page without its fenced code blocks and inline code, where a bracket is not a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lowercased, punctuation but '-' and '_' dropped, spaces to '-', a repeat
    given -1, -2, ..."""
    seen, ids = {}, set()
    for line in re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").lower()).replace(" ", "-")
        ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def relative_links(page: Path):
    for target in LINK.findall(prose(page.read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not ours to check
            yield target


def test_anchor_slugs_follow_githubs_rule(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Tuned presets\n## 5. The loss: `ppo_loss`\n```\n# not a heading\n```\n## Speed\n## Speed\n")
    assert anchors(page) == {"tuned-presets", "5-the-loss-ppo_loss", "speed", "speed-1"}


def test_readmes_two_commands_are_the_ones_ci_runs():
    readme_lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    ci_test_command = next(line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                           if line.startswith("pip install"))
    assert ci_test_command == "pip install -r requirements.txt -r requirements-dev.txt && python -m pytest"
    assert ci_test_command in readme_lines
    assert "pip install -r requirements.txt && python ppo.py --env-id CartPole-v1" in readme_lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading gives #{anchor})")
        elif anchor.startswith("L") and file.suffix == ".py":
            line = int(re.match(r"L(\d+)", anchor).group(1))
            if line > len(file.read_text().splitlines()):
                broken.append(f"{target} (the file has fewer lines)")
    assert not broken, broken


def test_the_link_check_sees_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#other-page) [gone](missing.md) [bad](other.md#nowhere) `[code](x.md)`\n"
                    "[web](https://example.com)\n")
    assert list(relative_links(page)) == ["other.md#other-page", "missing.md", "other.md#nowhere"]
    assert "nowhere" not in anchors(tmp_path / "other.md") and not (tmp_path / "missing.md").exists()


@pytest.mark.parametrize("command", [
    ["examples/rlhf/rlhf_ppo.py"],
    ["benchmarks/run.py", "--env-ids", "CartPole-v1", "--seeds", "1"],
    ["benchmarks/curves.py", "run=runs/none"],
])
def test_a_missing_matplotlib_is_one_line_before_any_work(tmp_path, command):
    """docs/rlhf.md's first command, after requirements.txt alone, trained for 16 s and then died with
    a traceback (2026-12-06). A matplotlib that cannot be imported (shadowed here) must stop it first."""
    (tmp_path / "matplotlib.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, str(ROOT / command[0]), *command[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "requirements-dev.txt" in done.stderr
    assert done.stdout == ""  # nothing trained, nothing printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matplotlib.py"]  # nothing written
