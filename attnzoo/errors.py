"""User-facing errors.

Every mistake a user can make (unknown model, wrong channels, bad option, missing data, tampered weights)
raises :class:`AttnzooError` with one message that names the bad value and what is accepted. The command
line prints that message as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AttnzooError(ValueError):
    """A mistake in what the user asked for; the message says what was wrong and what is accepted."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """`" Did you mean: a, b?"` for the closest choices, or an empty string."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str], accepted: str | None = None) -> AttnzooError:
    """An error for an unknown `kind` (model, attention, ...) that suggests the closest valid names.

    ``accepted`` replaces the full list of choices where that list would be too long to read.
    """
    choices = sorted(choices)
    return AttnzooError(f"unknown {kind} {name!r}.{suggest(name, choices)} Accepted: {accepted or ', '.join(choices)}.")


def usage_error(err: BaseException, command: str) -> AttnzooError:
    """A parser error (unknown flag, wrong type) as one line that points at the command's --help."""
    return AttnzooError(f"{' '.join(str(err).split())} (see: attnzoo {command} --help)")
