"""The ``--config`` files of a command, checked before anything heavy is imported: each must exist and hold a
YAML mapping, or the command ends in one line naming the file (jsonargparse would name it ``"<unicode string>"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from attnzoo.errors import AttnzooError


def option_values(argv: list[str], flags: tuple[str, ...]) -> Iterator[str]:
    """The values given to any of ``flags`` (``--flag value`` or ``--flag=value``)."""
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag in flags:
            if eq:
                yield value
            elif i + 1 < len(argv):
                yield argv[i + 1]
                i += 1
        i += 1


def check_config_files(argv: list[str]) -> None:
    """Each ``--config`` / ``-c`` file exists and holds a YAML mapping; otherwise one :class:`AttnzooError`."""
    import yaml

    for value in option_values(argv, ("--config", "-c")):
        path = Path(value)
        if not path.is_file():
            raise AttnzooError(f"--config {value!r}: no such file.")
        try:
            loaded = yaml.safe_load(path.read_text())
        except UnicodeDecodeError:
            raise AttnzooError(f"--config {value!r} is not a YAML file (not even text).") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise AttnzooError(f"--config {value!r} is not valid YAML: {problem}{where}.") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise AttnzooError(f"--config {value!r} is not a YAML mapping of options (it holds a "
                               f"{type(loaded).__name__}); expected sections such as trainer:, model:, data:.")
