"""The `attnzoo` command line: a thin layer over the Python API.

Lightning's subcommands (fit, validate, test, predict) go to LightningCLI. The zoo's own subcommands (list,
info, export, push, convert, evaluate, bench) are plain Python functions exposed through `jsonargparse.auto_cli`, so
`--config` and `--help` behave the same everywhere. `attnzoo --help` lists them all, from :data:`COMMANDS`.

A user mistake (:class:`attnzoo.errors.AttnzooError`) ends in one line on stderr and exit code 2; an output that
cannot be written, or any operating system error about a path (a full disk, a read-only folder), in one line
naming the path and the cause, exit code 1.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys

from attnzoo._version import __version__
from attnzoo.errors import AttnzooError, suggest, unknown, usage_error

LIGHTNING = "lightning"
# name -> (what runs it, its line in `attnzoo --help`). A new command is one line here: LIGHTNING, or the
# "module:function" of a plain function, whose parameters become the options and whose docstring its --help.
# The functions are imported only when their command runs, so `attnzoo list` does not import Lightning.
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": (LIGHTNING, "train a model: --config FILE, then --model.*, --data.*, --trainer.* (LightningCLI)"),
    "validate": (LIGHTNING, "evaluate a model on the validation data (--ckpt_path CKPT)"),
    "test": (LIGHTNING, "evaluate a model on the test data (--ckpt_path CKPT)"),
    "predict": (LIGHTNING, "the top classes of images, with probabilities (--ckpt_path CKPT)"),
    "list": ("attnzoo.commands:list_command", "the registered models with their parameters and FLOPs"),
    "info": ("attnzoo.commands:info_command", "one model: where its attention sits, what it costs over plain"),
    "export": ("attnzoo.weights.commands:export_command",
               "a model as weights (safetensors + config), ONNX (--format onnx) or a torch.export program"),
    "push": ("attnzoo.weights.commands:push_command",
             "publish weights (a directory or a training checkpoint) on the Hub, print their index record"),
    "convert": ("attnzoo.weights.commands:convert_command", "an official released checkpoint into attnzoo weights"),
    "evaluate": ("attnzoo.weights.commands:evaluate_command",
                 "top-1/top-5 of weights on an image folder, recorded in their config.json and card"),
    "bench": ("attnzoo.bench.command:bench_command", "speed, memory and graph breaks of models against plain"),
    "explain": ("attnzoo.analysis.command:explain_command",
                "what the attention does on images: maps, Grad-CAM, gate statistics (the viz extra)"),
    "compare": ("attnzoo.compare.command:compare_command",
                "models under one recipe over several seeds: means, intervals, paired differences, costs"),
}
EXTRA_COMMANDS = {name: target for name, (target, _) in COMMANDS.items() if target != LIGHTNING}
HELP_FLAGS = ("-h", "--help")


def overview() -> str:
    """What `attnzoo --help` prints: every command with its line."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: attnzoo COMMAND [options]",
        "",
        "Paper-exact attention modules (SE, ECA, GCT, GC, CBAM, GAM) on ResNet and MobileNetV2.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        "`attnzoo COMMAND --help` shows a command's options; `attnzoo --version` the version.",
    ]
    return "\n".join(lines)


def _load(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _apply_aliases(argv: list[str], aliases: dict[str, str]) -> list[str]:
    """Rewrite flags a command declares in ``cli_aliases``.

    ``{"--private": "--private=true"}`` makes a bare boolean flag a switch (``--private false`` still works).
    """
    out = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag not in aliases:
            out.append(arg)
        elif eq:
            out.append(f"{aliases[flag].partition('=')[0]}={value}")
        elif "=" in aliases[flag] and i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false"):
            out.append(arg)
        else:
            out.append(aliases[flag])
    return out


def _parser_class(renames: dict[str, str], optional_positional: str | None):
    """jsonargparse's parser, with what a Python signature cannot say about the command line, so that ``--help``,
    parsing and error messages agree: an option a parameter cannot spell under its real flag
    (``{"--source": "--from"}``), and an optional parameter taken as a bare word (``attnzoo list 'eca_*'``;
    jsonargparse makes only required parameters positional)."""
    from jsonargparse import ArgumentParser

    if not renames and optional_positional is None:
        return ArgumentParser

    class CommandParser(ArgumentParser):
        def add_argument(self, *args, **kwargs):
            if args and args[0] == f"--{optional_positional}":
                kwargs.pop("required", None)
                args, kwargs["nargs"] = (optional_positional,), "?"
            elif args and args[0] in renames:
                kwargs.setdefault("dest", args[0][2:])
                args = (renames[args[0]], *args[1:])
            return super().add_argument(*args, **kwargs)

    return CommandParser


def _collect_lists(argv: list[str], flags) -> list[str]:
    """``--images a b c`` -> ``--images=["a", "b", "c"]`` for the list flags a command declares in ``cli_lists``
    (a YAML list, ``--images '[a, b]'``, passes unchanged)."""
    out, i = [], 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag not in flags or (eq and value.lstrip().startswith("[")):
            out.append(argv[i])
            i += 1
            continue
        words = [value] if eq else []
        i += 1
        while not eq and i < len(argv) and not argv[i].startswith("--"):
            words.append(argv[i])
            i += 1
        if len(words) == 1 and words[0].lstrip().startswith("["):
            out.append(f"{flag}={words[0]}")
        else:
            out.append(f"{flag}={json.dumps(words)}")  # quoted: jsonargparse still makes "8" an int
    return out


# Options every jsonargparse parser has already.
OWN_FLAGS = ("--config", "--print_config", "--help")


def _run_extra(command: str, argv: list[str]) -> None:
    from jsonargparse import ArgumentError, auto_cli, auto_parser

    func = _load(EXTRA_COMMANDS[command])
    aliases = getattr(func, "cli_aliases", {})
    # An alias without a value ("--from": "--source") is a rename, done in the parser so that --help shows it;
    # one with a value ("--private": "--private=true") makes a switch, done on the arguments.
    # A flag jsonargparse owns (compare's "--config": "--recipe") cannot be a second parser option: rewritten
    # on the arguments too.
    renames = {target: alias for alias, target in aliases.items() if "=" not in target and alias not in OWN_FLAGS}
    switches = {alias: target for alias, target in aliases.items() if "=" in target or alias in OWN_FLAGS}
    argv = _collect_lists(_apply_aliases(argv, switches), getattr(func, "cli_lists", ()))
    # The docstring's whole first paragraph: jsonargparse would take its first line only, mid-sentence.
    summary = " ".join(inspect.getdoc(func).split("\n\n")[0].split())
    options = {"as_positional": True, "parser_mode": "yaml", "exit_on_error": False, "allow_abbrev": False,
               "parser_class": _parser_class(renames, getattr(func, "cli_optional_positional", None)),
               "description": summary}
    if hasattr(func, "cli_config_help"):
        options["config_help"] = func.cli_config_help
    try:
        auto_cli(func, args=argv, **options)
    except ArgumentError as err:
        actions = auto_parser(func, **options)._actions
        text = " ".join(str(err).split())
        required = re.match(r"the following arguments are required: (.*)", text)
        if required:
            # argparse names an option by its parameter (``source``); the user types its flag (``--from``).
            flag_of = {a.dest: a.option_strings[0] for a in actions if a.option_strings}
            missing = ", ".join(flag_of.get(name, name.upper()) for name in required[1].split(", "))
            raise AttnzooError(f"attnzoo {command} needs {missing} (see: attnzoo {command} --help)") from None
        unrecognized = re.search(r"unrecognized arguments: (--[\w.]+)", str(err))
        if unrecognized is None:
            raise usage_error(err, command) from None
        flags = [flag[2:] for action in actions for flag in action.option_strings
                 if flag.startswith("--") and not flag.endswith("+")]
        hint = suggest(unrecognized[1][2:], flags, cutoff=0.7, prefix="--")
        raise AttnzooError(f"{text}{'.' + hint if hint else ''} (see: attnzoo {command} --help)") from None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv:
            print(overview(), file=sys.stderr)
            raise SystemExit(2)
        command = argv[0]
        if command in HELP_FLAGS:
            print(overview())
        elif command == "--version":
            print(f"attnzoo {__version__}")
        elif command in EXTRA_COMMANDS:
            # jsonargparse names the program after sys.argv[0]; make usage lines read "attnzoo list ...".
            sys.argv[0] = f"attnzoo {command}"
            from attnzoo.config_files import check_config_files

            check_config_files(argv[1:])
            _run_extra(command, argv[1:])
        elif command in COMMANDS or command.startswith("-"):  # options before the subcommand are Lightning's
            from attnzoo.config_files import check_config_files

            check_config_files(argv)  # before importing Lightning: a mistyped file costs no start-up time
            from attnzoo.training.cli import run_lightning_cli

            run_lightning_cli(argv)
        else:
            raise unknown("command", command, COMMANDS,
                          accepted=f"{', '.join(COMMANDS)} (`attnzoo --help` says what each does)")
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
    except AttnzooError as err:
        from attnzoo.files import CannotWrite

        print(f"attnzoo: error: {err}", file=sys.stderr)
        raise SystemExit(1 if isinstance(err, CannotWrite) else 2) from None
    except BrokenPipeError:
        # `attnzoo list | head`: the reader left. Stop quietly, with stdout on /dev/null so that Python's own
        # flush at exit does not fail again (the recipe of the Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    except OSError as err:
        # The world refused (a full disk, a read-only folder, /proc): one line naming the path and the cause.
        # Another error without a path is nothing the user can act on: its traceback stays, for the bug report.
        from attnzoo.files import WRITE_REFUSED, describe_os_error

        if err.filename is None and err.errno not in WRITE_REFUSED:
            raise

        print(f"attnzoo: error: {describe_os_error(err)}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
