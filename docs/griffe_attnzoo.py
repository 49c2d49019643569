"""A Griffe extension (mkdocs.yml loads it) that reads attnzoo's docstrings as their authors wrote them.

Two habits of the code base that Griffe's Google-style parser does not know:

- Sphinx roles (:func:`load`, :class:`~attnzoo.training.ImageClassifier`): each becomes a cross-reference to
  the object's full path, resolved in the docstring's own scope the way Sphinx does (``~`` shows the last name
  only). mkdocs' strict build then fails on a role whose target is not in the API reference. A name that is
  not attnzoo's (a method inherited from Lightning) stays code.
- Several parameters documented on one line (``mean, std: ...``): each parameter gets the entry, so the
  check that every documented parameter exists stays on.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|exc|data|obj):`(~?)([\w.]+)`")
GROUPED_ARG = re.compile(r"^(\s+)(\**\w+(?:\s*,\s*\**\w+)+):(.*)$")
SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$")

logger = griffe.get_logger("griffe_attnzoo")


def resolve_role(obj: griffe.Object, target: str) -> str | None:
    if target.startswith("attnzoo."):
        return target
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except griffe.NameResolutionError:
        return None
    return f"{resolved}.{rest}" if rest else resolved


def replace_roles(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match) -> str:
        short, target = match.groups()
        display = target.rsplit(".", 1)[-1] if short else target
        path = resolve_role(obj, target)
        if path is None:  # e.g. a method inherited from Lightning, which Griffe does not load
            logger.debug(f"{obj.path}: {match.group(0)} left as code: not found in attnzoo")
            return f"`{display}`"
        return f"[`{display}`][{path}]"

    return ROLE.sub(link, text)


def split_grouped_args(text: str) -> str:
    """``a, b: text`` in a parameters section becomes ``a: text`` and ``b: text`` (continuation lines too)."""
    lines = text.splitlines()
    out: list[str] = []
    entry_indent: int | None = None  # the indentation of the entries of the section being read
    header_indent = -1
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        header = SECTION.match(line)
        if header:
            header_indent, entry_indent = indent, None
        elif line.strip() and header_indent >= 0:
            if indent <= header_indent:
                header_indent, entry_indent = -1, None  # the section ended
            elif entry_indent is None:
                entry_indent = indent
        grouped = GROUPED_ARG.match(line) if entry_indent is not None and indent == entry_indent else None
        if not grouped:
            out.append(line)
            i += 1
            continue
        names, first = grouped.group(2), grouped.group(3)
        block = [first]
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append("\n" + lines[i])
            i += 1
        for name in re.split(r"\s*,\s*", names):
            out.append(f"{' ' * indent}{name}:{''.join(block)}".rstrip("\n"))
    return "\n".join(out)


class AttnzooDocstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = split_grouped_args(replace_roles(obj, obj.docstring.value))
