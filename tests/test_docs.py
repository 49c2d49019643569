"""The generated pages (the models table in README.md and docs/models.md, docs/attention/*.md, docs/cli.md) must
not go stale, and the documentation site's includes must resolve."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_generated_tables_and_pages_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "update_tables.py"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_attention_module_has_its_page_with_paper_and_placement():
    from attnzoo import attention

    for name in attention.list_attention():
        page = (ROOT / "docs" / "attention" / f"{name}.md").read_text()
        assert "Placement" in page and "arXiv" in page, name
        assert f"`{name}_r50`" in page


def _cli_reference():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import update_cli
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return update_cli


def test_cli_reference_has_a_section_for_every_command():
    # The commands come from the CLI's own tables; a command added there and not regenerated fails here.
    update_cli = _cli_reference()
    page = update_cli.PAGE.read_text()
    documented = re.findall(r"^## attnzoo (\w[\w-]*) \{#", page, re.M)
    assert documented == update_cli.commands(), "run `python docs/update_cli.py`"


@pytest.mark.slow
def test_cli_reference_is_the_commands_own_help():
    update_cli = _cli_reference()
    recorded = re.search(r"with (.*?); do not edit", update_cli.PAGE.read_text().splitlines()[0]).group(1)
    if recorded != update_cli.versions():
        # Lightning's options are part of the help: another Lightning would be a false alarm, not a stale page.
        pytest.skip(f"docs/cli.md was generated with {recorded}, this environment has {update_cli.versions()}")
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "update_cli.py"), "--check"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_sections_the_site_includes_exist():
    # docs/ pages include README sections (--8<-- "README.md:setup"), so the set-up commands cannot drift apart;
    # a marker lost in a README edit would fail the site's strict build, this says it without building.
    includes = set()
    for page in (ROOT / "docs").rglob("*.md"):
        includes |= set(re.findall(r'^--8<-- "([^":]+):([\w-]+)"$', page.read_text(), re.M))
    assert includes, "no page includes a README section any more: update this test"
    for file, section in sorted(includes):
        text = (ROOT / file).read_text()
        start, end = f"<!-- --8<-- [start:{section}] -->", f"<!-- --8<-- [end:{section}] -->"
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), (file, section)


# ---- every documented command runs as written after the README's set-up ------------------------------------

# What a user brings, never made by a documented step: a data set, an official release file downloaded from the
# link the page gives, a Hub repository, or their own earlier run. Anything else a command names must be in the
# repository or be written by a command documented before it (on its page, or in the README's set-up).
USER_INPUTS = (
    "/data/imagenet", "data/imagenet",                                    # ImageNet, sorted as the page says
    ".pth", ".pth.tar", ".pkl",                                           # official releases (weights.md's links)
    "hf-hub:", "ORG/",                                                    # a Hub repository
    "runs/x/", "runs/pets/", "runs/gct_r50/", "path/to/",                 # the user's own run or folder
    "eca_mobilenetv2-weights", "eca_r50-pets",                            # ... exported by the user's own run
    "/work/bench-runs/", "/tmp/peerbench/",                               # benchmarks' recorded output folders
    "photo.jpg", "more/",
)
# Options whose value is written, not read.
WRITES = ("--out", "--out_dir", "--trainer.default_root_dir")
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md")]


def documented_commands(page: Path) -> list[str]:
    """The `attnzoo ...` and `python -c ...` lines of a page's code blocks, in order (prompts, comments and
    optional `[...]` brackets removed: an optional part is checked as if given)."""
    commands, fence = [], None
    # A command continued over lines (`\` at the end) is one command.
    for line in re.sub(r"\\\n\s*", " ", page.read_text()).splitlines():
        line = line.strip()
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence in ("bash", "text", ""):
            line = line.removeprefix("$ ")
            for part in line.split(" && "):
                part = part.strip()
                if part.startswith(("attnzoo ", "python -c ")):
                    part = re.sub(r"\s+#[^'\"]*$", "", part)
                    part = re.sub(r"\s+>\s*\S+$", "", part)  # a redirection writes its file
                    commands.append(re.sub(r"\[(--[^\]]+)\]", r"\1", part).strip())
    return commands


def _cli_options() -> dict[str, set[str]]:
    """Each command's options, from docs/cli.md (the commands' own --help, checked by the tests above)."""
    sections = re.split(r"^## attnzoo (\S+) \{#", (ROOT / "docs" / "cli.md").read_text(), flags=re.M)
    return {name: set(re.findall(r"(--[\w.-]+)", text)) for name, text in zip(sections[1::2], sections[2::2])}


def _data_module_options() -> set[str]:
    from attnzoo.data.base import ClassificationDataModule

    def subclasses(cls):
        return [cls, *(s for d in cls.__subclasses__() for s in subclasses(d))]

    import attnzoo.data.modules  # noqa: F401

    return {p for cls in subclasses(ClassificationDataModule) for p in inspect.signature(cls.__init__).parameters}


def _made_by(command: list[str]) -> set[str]:
    """The paths a documented command writes (for the commands after it)."""
    made = set()
    for flag, value in zip(command, command[1:]):
        if flag in WRITES:
            made.add(value.rstrip("/"))
    if command[:2] == ["attnzoo", "fit"] and "--config" in command:  # the recipe's run folder
        import yaml

        recipe = yaml.safe_load((ROOT / command[command.index("--config") + 1]).read_text())
        root = (recipe.get("trainer") or {}).get("default_root_dir")
        if root:
            made.add(f"{root}/checkpoints/last.ckpt")
    written = re.search(r"write_image_folder\('([^']+)'\)", " ".join(command))
    if written:
        made.add(written[1])
    return made


def _is_path(word: str) -> bool:
    return "/" in word or bool(re.search(r"\.(ckpt|yaml|onnx|pt2|json|safetensors|pth|tar|pkl|jpg|png)$", word))


def test_every_documented_command_names_real_options_and_files_it_can_have():
    import shlex

    options, data_options = _cli_options(), _data_module_options()
    setup = documented_commands(ROOT / "README.md")
    made = set().union(*(_made_by(shlex.split(c)) for c in setup))
    problems = []
    for page in PAGES:
        page_made = set(made)
        for text in documented_commands(page):
            command = shlex.split(text)
            where = f"{page.name}: {text}"
            if command[0] == "attnzoo":
                name = command[1]
                if name not in options:
                    problems.append(f"{where}: no command {name!r}")
                    continue
                for word in command[2:]:
                    flag = word.split("=", 1)[0]
                    if not flag.startswith("--"):
                        continue
                    if flag.startswith("--data.init_args."):
                        ok = flag.removeprefix("--data.init_args.") in data_options
                    else:
                        # --fold-preprocessing is the switch spelling of --fold_preprocessing
                        ok = flag in options[name] or flag.replace("-", "_").replace("__", "--") in options[name]
                    if not ok:
                        problems.append(f"{where}: {flag} is not an option of attnzoo {name}")
            for flag, word in zip(["", *command], command):
                if flag in WRITES or not _is_path(word) or word.startswith(("'", "[")) or "(" in word:
                    continue
                path = word.rstrip("/")
                if (ROOT / path).exists() or path in page_made or any(path.startswith(m + "/") for m in page_made):
                    continue
                if any(marker in word for marker in USER_INPUTS):
                    continue
                problems.append(f"{where}: {word!r} is neither in the repository nor written by a step before it")
            page_made |= _made_by(command)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_the_cheap_documented_commands_run_as_written(tmp_path):
    import shlex

    ran = 0
    for page in PAGES:
        for text in documented_commands(page):
            command = shlex.split(text)
            if command[:2] == ["python", "-c"]:  # analysis.md's sample images, written where the user is
                subprocess.run([sys.executable, "-c", command[2]], check=True, timeout=300, cwd=tmp_path)
                assert len(list(tmp_path.glob("shapes-test/*/*.png"))) == 40
                assert len(list(tmp_path.glob("shapes-test/*/"))) == 10
                ran += 1
                continue
            if command[:2] not in (["attnzoo", "list"], ["attnzoo", "info"]):
                continue
            result = subprocess.run([str(Path(sys.executable).parent / "attnzoo"), *command[1:]], capture_output=True,
                                    text=True, timeout=300, cwd=ROOT)
            expected_error = "gct_r5" in command  # the README's example of an error
            assert (result.returncode == 2) == expected_error, (page.name, text, result.stderr)
            ran += 1
    assert ran >= 4
