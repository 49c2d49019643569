"""User-facing errors.

Every mistake a user can make (unknown model, wrong channels, bad option, missing data, tampered weights)
raises :class:`AttnzooError` with one message that names the bad value and what is accepted. The command
line prints that message as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


# A value quoted in a message (a path, a name, a config.json string) is cut to this many characters: a 10 MB
# string in a file must not become a 10 MB error line. Whole messages stay readable below MAX_MESSAGE.
MAX_VALUE = 200
MAX_MESSAGE = 2000


def shorten(text: str, limit: int = MAX_VALUE) -> str:
    """``text`` with its middle replaced by ``...(N characters)...`` when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 20, 8)
    return f"{text[:keep]}...({len(text) - 2 * keep} characters cut)...{text[-keep:]}"


def _cut_long_values(message: str) -> str:
    """Every run of more than MAX_VALUE characters without a space (a repr'd value, a path) is shortened; a
    message still longer than MAX_MESSAGE (a long value with spaces) loses its middle."""
    message = re.sub(r"\S{%d,}" % (MAX_VALUE + 1), lambda m: shorten(m[0]), message)
    return shorten(message, MAX_MESSAGE)


class AttnzooError(ValueError):
    """A mistake in what the user asked for; the message says what was wrong and what is accepted.

    Long values in the message are cut here, once for every message (see :func:`shorten`)."""

    def __init__(self, message: object = "", *args):
        super().__init__(_cut_long_values(str(message)), *args)


def listing(keys, limit: int = 8) -> str:
    """``a, b, c and 5 more``: key lists short enough for a one-line error."""
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def suggest(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.5, prefix: str = "") -> str:
    """`" Did you mean: a, b?"` for the closest choices, or an empty string; each shown after ``prefix``
    (``--trainer.``), which takes no part in the matching. Option names are short, so their callers ask for
    closer matches (``cutoff=0.7``)."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)
    return f" Did you mean: {', '.join(prefix + c for c in close)}?" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str], accepted: str | None = None) -> AttnzooError:
    """An error for an unknown `kind` (model, attention, ...) that suggests the closest valid names.

    ``accepted`` replaces the full list of choices where that list would be too long to read.
    """
    choices = sorted(choices)
    return AttnzooError(f"unknown {kind} {name!r}.{suggest(name, choices)} Accepted: {accepted or ', '.join(choices)}.")


def usage_error(err: BaseException, command: str) -> AttnzooError:
    """A parser error (unknown flag, wrong type) as one line that points at the command's --help."""
    text = " ".join(str(err).split())
    return _type_error(text, command) or AttnzooError(f"{text} (see: attnzoo {command} --help)")


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true/false", "str": "a string",
               "NoneType": "null", "dict": "a mapping", "list": "a list",
               "collections.abc.Sequence": "a list", "tuple": "a list", "pathlib.Path": "a path"}


def _type_error(text: str, command: str) -> AttnzooError | None:
    """jsonargparse's wrong-type report (a union's every subtype and why each refused, several hundred characters)
    as "--trainer.max_epochs takes an integer or null, got 'many'". The innermost key is the one at fault: for
    ``--model.optimizer.lr abc`` the report nests lr's error inside the optimizer's; an option of a class given
    by class_path (a data module) is named with its class."""
    keys = re.findall(r'Parser key "([\w.]+)"', text)
    if not keys:
        return None
    tail = text[text.rfind('Parser key "'):]
    subtypes = re.search(r"Subtypes: \[", tail)
    if subtypes:
        expected = _split_top_level(_bracketed(tail, subtypes.end() - 1))
    else:
        single = re.search(r"Expected a (<class '[\w.]+'>|typing\.Literal\[|tuple with (\d+) elements)", tail)
        if single is None:
            return None
        if single[2]:
            given = re.search(r"Got value: (.*?)(?: - Expected|$)", tail)
            return AttnzooError(f"--{'.'.join(keys)} takes {single[2]} values, got "
                                f"{given[1].strip() if given else 'another number'} (see: attnzoo {command} --help)")
        start = single.start(1)
        expected = [tail[start:tail.index(">", start) + 1] if single[1].startswith("<")
                    else "typing.Literal" + _bracketed(tail, single.end(1) - 1)]
    given = re.search(r"(?:Given|Got) value: (.*?)(?:\. Got value:| - Expected| Given value type:|$)", tail)
    if given is None:
        return None
    kinds, values = [], []
    for name in expected:
        literal = re.fullmatch(r"typing\.Literal\[(.*)\]", name)
        if literal:
            values += [v.strip().strip("'\"") for v in literal[1].split(",")]
        elif (kind := _describe_type(name)) and kind not in kinds:
            kinds.append(kind)
    if values:
        kinds.append("one of " + ", ".join(dict.fromkeys(values)))
    if not kinds:
        return None
    choices = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
    option = "--" + ".".join(keys)
    owner = re.search(r"Problem with given class_path '([\w.]+)': Parser key \"" + re.escape(keys[-1]) + '"', text)
    if owner:
        option += f" of {owner[1]}"
    return AttnzooError(f"{option} takes {choices}, got {given[1].strip()!r} (see: attnzoo {command} --help)")


def _bracketed(text: str, start: int) -> str:
    """The text of the bracket pair opening at ``text[start]``, brackets included."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"[": 1, "]": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    return text[start:]


def _split_top_level(bracketed: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in bracketed[1:-1]:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [*parts, current.strip()] if current.strip() else parts


def _describe_type(name: str) -> str | None:
    """A jsonargparse type name in words: ``<class 'int'>`` -> "an integer". A torch.Tensor alternative
    (Lightning's optimizers accept a tensor lr) is not something to type on a command line: None."""
    cls = re.fullmatch(r"<class '([\w.]+)'>", name)
    if cls is None:
        return None
    if cls[1] == "torch.Tensor":
        return None
    return _TYPE_NAMES.get(cls[1], cls[1].rsplit(".", 1)[-1])

