"""An mkdocs hook: links of the README's sections that the site includes (pymdownx.snippets), made relative to
docs/ instead of the repository's top.

The README links ``[x](docs/training.md#slurm)`` so that they work where it is read on its own; included into
docs/index.md, the same link must read ``training.md#slurm``. The rewrite runs after the snippets are inserted
(a Markdown preprocessor below snippets' priority), before mkdocs checks the links, so --strict still checks
every one of them.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

README_LINK = re.compile(r"\]\(docs/")


class _ReadmeLinks(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        return [README_LINK.sub("](", line) for line in lines]


class ReadmeLinks(Extension):
    def extendMarkdown(self, md) -> None:  # noqa: N802 - Python-Markdown's name
        md.preprocessors.register(_ReadmeLinks(md), "attnzoo_readme_links", 31)  # snippets run at 32


def on_config(config, **_):
    config.markdown_extensions.append(ReadmeLinks())
    return config
