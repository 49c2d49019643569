"""Weights you can trust: safetensors + config.json + model card, on disk and on the Hugging Face Hub.

- :func:`save_pretrained` writes a model in that format; :func:`load` reads it back from a registry name
  (through the zoo's index in ``checkpoints/``), ``hf-hub:ORG/NAME[@REVISION]``, or a local path.
- :func:`load_backbone_weights` retrofits plain ResNet/MobileNetV2 weights into an attention model.
- ``attnzoo push``/``export``/``convert`` (:mod:`attnzoo.weights.commands`) publish Lightning checkpoints and
  convert the official releases of ECA-Net, CBAM and GCT.

Nothing downloaded is ever unpickled, and a weight listed in the index is checked against its sha256.
"""

from attnzoo.weights.api import load, save_pretrained
from attnzoo.weights.retrofit import load_backbone_weights

__all__ = ["load", "save_pretrained", "load_backbone_weights"]
