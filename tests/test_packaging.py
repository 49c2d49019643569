"""What `pip install` ships: every subpackage (found by setuptools) and the zoo's index of weights."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_index_is_the_repositorys_checkpoints_folder_seen_from_the_package():
    from attnzoo.weights.index import INDEX_PATH

    assert INDEX_PATH.is_file() and INDEX_PATH.parent.parent == ROOT / "attnzoo"
    assert INDEX_PATH.samefile(ROOT / "checkpoints" / "index.json")


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_and_the_index(tmp_path):
    pytest.importorskip("setuptools")
    leftover = not (ROOT / "build").exists()  # setuptools builds in the source tree; tidy up what it adds
    try:
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT), "-w",
             str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
    finally:
        if leftover:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("attnzoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.relative_to(ROOT)) for p in (ROOT / "attnzoo").rglob("__init__.py")}
    assert packages <= names
    assert {"attnzoo/checkpoints/index.json", "attnzoo/checkpoints/README.md", "attnzoo/model_stats.json"} <= names
    from attnzoo import __version__

    assert wheel.name.startswith(f"attnzoo-{__version__}-")
