"""Checkpoints written by earlier versions of :class:`attnzoo.training.ImageClassifier`, brought up to date when
they are loaded (``ImageClassifier.on_load_checkpoint``, so ``load_from_checkpoint``, ``--ckpt_path`` and resuming
all see the current layout).

- attnzoo 0.1 kept the EMA inside the module, as an ``AveragedModel`` of the network: ``state_dict`` held the
  trained weights as ``model.*``, the average as ``ema.module.*`` and its counter as ``ema.n_averaged``. Now EMA is
  Lightning's ``EMAWeightAveraging``, whose checkpoints hold the average as the module's own ``model.*`` in
  ``state_dict``, the trained weights in ``current_model_state`` and the counter in ``averaging_state``; the old
  layout is rewritten into that one. Evaluating an old checkpoint therefore still uses the average, and resuming
  it continues both the trained weights and the average.
"""

from __future__ import annotations

OLD_EMA_PREFIX = "ema.module."
OLD_EMA_COUNTER = "ema.n_averaged"


def upgrade_checkpoint(checkpoint: dict) -> dict:
    """Rewrite ``checkpoint`` in place into the current layout (a no-op for current checkpoints)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not any(key.startswith(OLD_EMA_PREFIX) for key in state):
        return checkpoint
    live = {k: v for k, v in state.items() if not k.startswith("ema.")}
    average = {"model." + k[len(OLD_EMA_PREFIX):]: v for k, v in state.items() if k.startswith(OLD_EMA_PREFIX)}
    checkpoint["state_dict"] = {**live, **average}
    checkpoint["current_model_state"] = live
    if OLD_EMA_COUNTER in state:
        checkpoint["averaging_state"] = {"n_averaged": state[OLD_EMA_COUNTER]}
    meta = checkpoint.get("attnzoo")
    if isinstance(meta, dict):
        meta["ema"] = False
    return checkpoint
