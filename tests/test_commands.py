"""`attnzoo list` and `attnzoo info` through the console script, as a user runs them."""

import json
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
    smaller = run("info", "eca_r50", "--input_size", "3", "160", "160")  # a list option takes several words
    assert smaller.returncode == 0 and "FLOPs @3x160x160" in smaller.stdout, smaller.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "eca_r5"], "unknown model 'eca_r5'. Did you mean: eca_r50"),
        (["info", "eca_r50", "--input_size", "224"], "--input_size takes 3 values, got ['224'] (see"),
        (["list", "--bogus"], "unrecognized arguments: --bogus (see: attnzoo list --help)"),
        (["list", "zzz*"], "no model matches 'zzz*'"),
        # A misspelt option names the real one; a prefix is not taken as an abbreviation of it.
        (["export", "r18", "--fromat", "onnx"], "--fromat onnx. Did you mean: --format? (see: attnzoo export --help)"),
        (["bench", "--models", "r18", "--batch_size", "1"], "--batch_size 1. Did you mean: --batch_sizes? (see"),
        (["bench", "--models", "r18", "--batch_sizes", "x"], "--batch_sizes takes an integer, got 'x' (see"),
        # A missing option is named by the flag the user types, not by its Python parameter (--from, not source).
        (["convert", "x.pth", "--model", "r50"], "attnzoo convert needs --from, --out (see: attnzoo convert --help)"),
        # Lightning's "required: fit.data" says what is missing inside; a user without a config needs --config.
        (["fit"], "attnzoo fit needs a recipe: --config FILE (one of configs/*.yaml, e.g. --config "
                  "configs/quickstart.yaml)"),
    ],
)
def test_mistakes_end_in_one_line(args, message):
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnzoo: error: ") and message in lines[0], result.stderr


def test_bench_list_options_take_several_words(tmp_path):
    result = run("bench", "--models", "r18", "*_r18", "--tasks", "infer", "--compile", "eager", "--batch_sizes", "1",
                 "2", "--resolutions", "32", "--warmup", "0", "--repeats", "1", "--min_time", "0", "--memory", "false",
                 "--graph_breaks", "false", "--num_classes", "10", "--out_dir", str(tmp_path), "--plot", "false")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in ("r18", "se_r18", "eca_r18", "gct_r18",
                                                                              "gc_r18", "cbam_r18", "gam_r18")
                                                               for b in (1, 2)}


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


def _help(command: str) -> str:
    import contextlib
    import io

    from attnzoo.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code in (0, None)
    return " ".join(out.getvalue().split())


@pytest.mark.parametrize("command", ["list", "info", "export", "push", "convert", "evaluate", "bench", "explain"])
def test_each_command_help_says_what_the_command_is_and_what_its_docs_say(command):
    import inspect

    from attnzoo.cli import EXTRA_COMMANDS, _load

    # The docstring's whole first paragraph, not its first line (export's stopped at "... model card), an").
    summary = " ".join(inspect.getdoc(_load(EXTRA_COMMANDS[command])).split("\n\n")[0].split())
    assert summary in _help(command)


def test_help_names_options_as_they_are_typed():
    convert = _help("convert")
    assert "--from SOURCE" in convert and "--source" not in convert
    listing = _help("list")
    assert "[pattern]" in listing and "positional arguments: pattern" in listing
    assert run("list", "--format", "json", "eca_r1*").returncode == 0  # the bare word after an option too
