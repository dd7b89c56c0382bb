"""The README's promises about the repository itself: its two commands and what CI runs."""

from __future__ import annotations

import re
from pathlib import Path


def _setup_block(readme: str) -> list[str]:
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert block, "README starts with a sh block of set-up commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_setup_commands(repo_root: Path) -> None:
    commands = _setup_block((repo_root / "README.md").read_text())
    assert commands == ["./dev up", "./dev test"]


def test_ci_runs_the_readme_test_command(repo_root: Path) -> None:
    test_command = _setup_block((repo_root / "README.md").read_text())[1]
    ci = (repo_root / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci]


def test_dev_script_installs_the_servers_and_the_venv(repo_root: Path) -> None:
    script = (repo_root / "dev").read_text()
    assert "apt-get install" in script and "mosquitto" in script and "influxdb" in script
    assert "python3 -m venv .venv" in script
    assert re.search(r"up\)\s+exec \.venv/bin/moclo up", script)
    assert re.search(r"test\)\s+exec \.venv/bin/python -m pytest", script)


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a page (outside code blocks)."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_links_between_the_readme_and_the_docs_lead_somewhere(repo_root: Path) -> None:
    pages = [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), (page.name, target)
            if anchor:
                assert anchor in _anchors(linked.read_text()), (page.name, target)
