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


def test_help_lists_every_command_with_a_line_and_a_typo_names_them_all():
    from attnzoo.cli import COMMANDS, LIGHTNING
    from attnzoo.training.cli import SUBCOMMANDS

    names = ["fit", "validate", "test", "predict", "list", "info", "export", "push", "convert", "bench"]
    assert set(names) <= set(COMMANDS)
    assert [n for n, (target, _) in COMMANDS.items() if target == LIGHTNING] == list(SUBCOMMANDS)
    shown = run("--help")
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.startswith("  ")}
    for name, (_, summary) in COMMANDS.items():
        assert summary in lines[name], name
    typo = run("fitt")
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert "unknown command 'fitt'. Did you mean: fit" in typo.stderr
    assert all(f" {name}," in typo.stderr or f" {name} (" in typo.stderr for name in COMMANDS), typo.stderr


def test_every_zoo_command_exists_and_help_imports_nothing_heavy():
    # A typo in the command table would only show when that command runs; --help must stay instant.
    code = ("import sys\nfrom attnzoo import cli\ncli.overview()\nassert 'torch' not in sys.modules\n"
            "for target in cli.EXTRA_COMMANDS.values():\n    func = cli._load(target)\n"
            "    assert callable(func) and func.__doc__, target\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
