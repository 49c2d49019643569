"""The ``--config`` files of a command, checked before anything heavy is imported: each must exist and hold a
YAML mapping, or the command ends in one line naming the file (jsonargparse would name it ``"<unicode string>"``).

A config is also bounded: YAML aliases let a few hundred bytes stand for billions of values (``&a [a, a, ...]``
nested nine deep), which jsonargparse would copy out one by one for ever. The size a config stands for, aliases
expanded, is counted on the parsed node graph (each node once) and refused above :data:`MAX_VALUES`; so is
nesting deeper than :data:`MAX_DEPTH`. A real config has a few hundred values a few levels deep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from attnzoo.errors import AttnzooError

MAX_VALUES = 100_000
MAX_DEPTH = 50


def _expanded_size(root) -> int:
    """How many values the YAML node graph under ``root`` stands for once every alias is copied out; counting
    stops at MAX_VALUES + 1. Each node is visited once (its size memoised), so an alias bomb costs nothing."""
    import yaml

    sizes: dict[int, int] = {}
    stack = [(root, 0, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if depth > MAX_DEPTH:
            raise RecursionError
        children = ([v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_VALUES + 1)
        else:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(text: str | bytes, where: str):
    """``yaml.safe_load(text)``, refused with one line naming ``where`` when it stands for more than MAX_VALUES
    values or nests deeper than MAX_DEPTH. The text is parsed once: the bounds are checked on the composed node
    graph, and only a graph within them is turned into Python values."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
            size = _expanded_size(root) if root is not None else 0
        except RecursionError:
            raise AttnzooError(f"{where} nests deeper than {MAX_DEPTH} levels: it is not an attnzoo config.") from None
        if size > MAX_VALUES:
            raise AttnzooError(f"{where} stands for more than {MAX_VALUES:,} values once its YAML aliases (&name, "
                               "*name) are expanded: refused (an alias bomb, or not a config).")
        return loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


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
            loaded = load_yaml(path.read_text(), f"--config {value!r}")
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
