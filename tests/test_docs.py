"""The README's models table and docs/attention/*.md are generated from the code and must not go stale."""

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
