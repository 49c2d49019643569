"""`attnzoo list` and `attnzoo info` through the console script, as a user runs them."""

import subprocess
import sys
from pathlib import Path

import pytest

ATTNZOO = Path(sys.executable).parent / "attnzoo"


def run(*args, **kwargs):
    return subprocess.run([str(ATTNZOO), *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_list_with_a_pattern_and_info():
    listed = run("list", "eca_*")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert rows == ["eca_r18", "eca_r34", "eca_r50", "eca_r101", "eca_r152", "eca_mobilenetv2"]
    info = run("info", "eca_r50")
    assert info.returncode == 0 and "extra 80 " in info.stdout and "layer4: 3" in info.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "eca_r5"], "unknown model 'eca_r5'. Did you mean: eca_r50"),
        (["info", "eca_r50", "--input_size", "224"], '"input_size"'),
        (["list", "--bogus"], "unrecognized arguments: --bogus (see: attnzoo list --help)"),
        (["list", "zzz*"], "no model matches 'zzz*'"),
    ],
)
def test_mistakes_end_in_one_line(args, message):
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnzoo: error: ") and message in lines[0], result.stderr


def test_a_closed_pipe_is_not_a_traceback():
    # The reader leaves before anything is written (like `attnzoo list | true`): every write hits a closed pipe.
    proc = subprocess.Popen([str(ATTNZOO), "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, stderr
    assert stderr == "", stderr
