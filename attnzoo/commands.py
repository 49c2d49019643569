"""The zoo's own subcommands: ``attnzoo list`` and ``attnzoo info``. Thin wrappers over the Python API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from attnzoo.errors import AttnzooError

from attnzoo.info import model_info
from attnzoo.registry import list_models


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _params_delta(info: dict) -> str:
    extra = info["extra_params"]
    if extra == 0:
        return "-"
    return f"+{extra:,}" if extra < 100_000 else f"+{_millions(extra)}"


def zoo_table(pattern: str | None = None, input_size=(3, 224, 224), describe: Callable[..., dict] = model_info) -> str:
    """The models table (Markdown) with parameters and FLOPs, as in the README (``describe`` gives each model's
    figures: ``model_info``, or a fresh count where the shipped figures are being remade)."""
    size = "x".join(map(str, input_size[1:]))
    lines = [
        f"| model | attention | params | extra params | GFLOPs @{size} | extra GFLOPs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in list_models(pattern):
        info = describe(name, input_size=input_size)
        lines.append(
            f"| `{name}` | {info['attention'] or '-'} | {_millions(info['params'])} | {_params_delta(info)} "
            f"| {info['flops'] / 1e9:.3f} | {info['extra_flops'] / 1e9:+.3f} |"
        )
    return "\n".join(lines)


def list_command(pattern: str | None = None, format: Literal["text", "markdown", "json"] = "text") -> None:
    """List the registered models with their parameters and FLOPs.

    Args:
        pattern: a glob such as "eca_*" or "*_r50"; all models when omitted.
        format: text for people, markdown for the README's table, json for programs.
    """
    names = list_models(pattern)
    if not names:
        raise AttnzooError(f"no model matches {pattern!r}; `attnzoo list` shows all of them.")
    if format == "markdown":
        print(zoo_table(pattern))
        return
    if format == "json":
        print(json.dumps([model_info(name) for name in names], indent=2))
        return
    print(f"{'model':<18} {'attention':<9} {'params':>9} {'extra':>10} {'GFLOPs':>8}  (224x224; FLOPs = 2 x MACs)")
    for name in names:
        info = model_info(name)
        print(
            f"{name:<18} {info['attention'] or '-':<9} {_millions(info['params']):>9} "
            f"{_params_delta(info):>10} {info['flops'] / 1e9:>8.2f}"
        )


def info_command(
    name: str, input_size: tuple[int, int, int] = (3, 224, 224), format: Literal["text", "json"] = "text"
) -> None:
    """Show a model's structure: where attention sits, what it costs over the plain backbone.

    Args:
        name: a registered model name, e.g. gct_r50.
        input_size: channels, height, width used for the FLOP count.
        format: text for people, json for programs.
    """
    info = model_info(name, input_size=tuple(input_size))
    if format == "json":
        print(json.dumps(info, indent=2))
        return
    print(f"{info['name']}: {info['backbone']} backbone, attention: {info['attention'] or 'none'}")
    if info["attention"]:
        print(f"  placement: {info['placement']}")
        sites = ", ".join(f"{stage}: {count}" for stage, count in info["attention_sites"].items())
        print(f"  attention modules: {info['attention_modules']} ({sites})")
    extra_pct = 100 * info["extra_params"] / info["plain_params"]
    print(f"  parameters: {info['params']:,} (plain {info['plain_params']:,}, extra {info['extra_params']:,} = {extra_pct:.3f}%)")
    flops_pct = 100 * info["extra_flops"] / info["plain_flops"]
    size = "x".join(map(str, info["input_size"]))
    print(
        f"  FLOPs @{size}: {info['flops'] / 1e9:.3f} G (= {info['macs'] / 1e9:.3f} GMACs), "
        f"extra {info['extra_flops'] / 1e9:.4f} G = {flops_pct:.3f}%"
    )
    print(f"  note: {info['flops_note']}")


list_command.cli_optional_positional = "pattern"  # `attnzoo list 'eca_*'`
info_command.cli_lists = ("--input_size",)  # `attnzoo info r50 --input_size 3 160 160`
