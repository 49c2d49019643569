"""Exponential moving average of the weights: Lightning's ``EMAWeightAveraging``, built before compile.

``ImageClassifier(ema_decay=...)`` adds this callback (``configure_callbacks``); it can also be given to a Trainer
directly. Lightning's callback keeps the average of the whole LightningModule, swaps it in for validation,
copies it into the model when training ends, and writes checkpoints whose ``state_dict`` holds the averaged
weights (the trained ones under ``current_model_state``), so validate/test/predict from a checkpoint use the
average with no option to remember.

The one change to Lightning's class: the average is copied from the module as constructed, without calling
``configure_model`` first. Lightning calls that hook to materialise lazily created layers (there are none here);
for ``ImageClassifier`` it compiles the network in place, and the copy would then be a compiled module.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.optim.swa_utils import AveragedModel


class EMA(EMAWeightAveraging):
    """``EMAWeightAveraging(decay=decay)``: the average is updated after every optimizer step."""

    def __init__(self, decay: float = 0.9998, **kwargs):
        super().__init__(decay=decay, **kwargs)
        self.decay = decay

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            device = self._device or pl_module.device
            self._average_model = AveragedModel(model=pl_module, device=device, use_buffers=self._use_buffers,
                                                **self._kwargs)
