"""Where attention goes in a backbone: the one place backbones meet the attention registry.

A backbone asks the plan two questions for each stage, without knowing which attention it is:
- ``block_attention(stage)``: a factory ``channels -> module`` for the end of each residual branch, or None;
- ``conv_gate(stage)``: a factory ``channels -> module`` applied to the input of every convolution, or None.
The attention class's ``placement`` decides which of the two it answers.

Stages are numbered from 0 (the stem) up; each backbone documents its numbering.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from torch import nn

from attnzoo import attention as attention_registry
from attnzoo.errors import AttnzooError

ModuleFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class AttentionPlan:
    name: str | None = None
    kwargs: Mapping = field(default_factory=dict)
    stages: frozenset[int] | None = None  # None: every stage
    stage_kwargs: Mapping[int, Mapping] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        name: str | None,
        kwargs: Mapping | None,
        stages: Iterable[int] | None,
        stage_kwargs: Mapping | None,
        valid_stages: range,
    ) -> AttentionPlan:
        if name is None:
            if kwargs or stage_kwargs:
                raise AttnzooError("attention options were given but attention is None; name an attention first.")
            return cls()
        stage_kwargs = {int(k): dict(v) for k, v in (stage_kwargs or {}).items()}
        for given in [kwargs or {}, *stage_kwargs.values()]:
            attention_registry.check_options(name, given)  # before any module is built
        chosen = None if stages is None else frozenset(int(s) for s in stages)
        for stage in (chosen or frozenset()) | set(stage_kwargs):
            if stage not in valid_stages:
                raise AttnzooError(
                    f"attention stage {stage} does not exist; this backbone's stages are "
                    f"{valid_stages.start}..{valid_stages.stop - 1} (0 is the stem)."
                )
        return cls(name, dict(kwargs or {}), chosen, stage_kwargs)

    def _factory(self, stage: int, placement: str) -> ModuleFactory | None:
        if self.name is None or attention_registry.get(self.name).placement != placement:
            return None
        if self.stages is not None and stage not in self.stages:
            return None
        options = {**self.kwargs, **self.stage_kwargs.get(stage, {})}
        return functools.partial(attention_registry.create, self.name, **options)

    def block_attention(self, stage: int) -> ModuleFactory | None:
        return self._factory(stage, "residual")

    def conv_gate(self, stage: int) -> ModuleFactory | None:
        return self._factory(stage, "pre_conv")
