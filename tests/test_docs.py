"""The generated pages (the models table in README.md and docs/models.md, docs/attention/*.md, docs/cli.md) must
not go stale, and the documentation site's includes must resolve."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_generated_tables_and_pages_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "update_tables.py"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_attention_module_has_its_page_with_paper_and_placement():
    from attnzoo import attention

    for name in attention.list_attention():
        page = (ROOT / "docs" / "attention" / f"{name}.md").read_text()
        assert "Placement" in page and "arXiv" in page, name
        assert f"`{name}_r50`" in page


def _cli_reference():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import update_cli
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return update_cli


def test_cli_reference_has_a_section_for_every_command():
    # The commands come from the CLI's own tables; a command added there and not regenerated fails here.
    update_cli = _cli_reference()
    page = update_cli.PAGE.read_text()
    documented = re.findall(r"^## attnzoo (\w[\w-]*) \{#", page, re.M)
    assert documented == update_cli.commands(), "run `python docs/update_cli.py`"


@pytest.mark.slow
def test_cli_reference_is_the_commands_own_help():
    update_cli = _cli_reference()
    recorded = re.search(r"with (.*?); do not edit", update_cli.PAGE.read_text().splitlines()[0]).group(1)
    if recorded != update_cli.versions():
        # Lightning's options are part of the help: another Lightning would be a false alarm, not a stale page.
        pytest.skip(f"docs/cli.md was generated with {recorded}, this environment has {update_cli.versions()}")
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "update_cli.py"), "--check"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_sections_the_site_includes_exist():
    # docs/ pages include README sections (--8<-- "README.md:setup"), so the set-up commands cannot drift apart;
    # a marker lost in a README edit would fail the site's strict build, this says it without building.
    includes = set()
    for page in (ROOT / "docs").rglob("*.md"):
        includes |= set(re.findall(r'^--8<-- "([^":]+):([\w-]+)"$', page.read_text(), re.M))
    assert includes, "no page includes a README section any more: update this test"
    for file, section in sorted(includes):
        text = (ROOT / file).read_text()
        start, end = f"<!-- --8<-- [start:{section}] -->", f"<!-- --8<-- [end:{section}] -->"
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), (file, section)
