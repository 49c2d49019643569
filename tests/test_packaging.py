"""pyproject.toml lists the packages by hand (checkpoints/ is mapped in): no subpackage may be left out."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_and_the_index_ships():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "attnzoo").rglob("__init__.py")
    } | {"attnzoo.checkpoints"}
    assert set(config["packages"]) == on_disk
    assert config["package-dir"]["attnzoo.checkpoints"] == "checkpoints"
    assert (ROOT / "checkpoints" / "index.json").is_file()


def test_the_index_is_found_where_pip_installs_it():
    from attnzoo.weights.index import INDEX_PATH

    assert INDEX_PATH.is_file() and INDEX_PATH.name == "index.json"
