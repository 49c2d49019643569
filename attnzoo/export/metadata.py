"""What an exported model carries about itself, so that a consumer needs nothing else.

ONNX keeps it in the model's ``metadata_props`` (onnxruntime: ``session.get_modelmeta().custom_metadata_map``),
a ``torch.export`` program in the extra file ``attnzoo.json`` of its archive. The keys are the same in both, and
every value is JSON (``json.loads`` each one):

- ``architecture``, ``num_classes``, ``model_args``: what rebuilds the network with ``attnzoo.create_model``;
- ``label_names``: one name per output, or null;
- ``preprocessing``: ``input_size`` [3, S, S], ``resize_to`` (the shorter side before the center crop, S / crop_pct
  rounded down), ``crop_pct``, ``interpolation``, ``mean`` and ``std`` (of pixels scaled to 0-1, RGB);
- ``input``: the graph's input: name, shape, dtype, layout, channel order, and whether the normalisation
  ``(pixel / 255 - mean) / std`` is the caller's job (``"normalize": "caller"``, float32 input) or inside the
  graph (``"in_graph"``, uint8 input 0-255);
- ``output``: name and shape of the logits (scores before softmax); for a features network
  (``features_only``), ``names`` of its outputs, one per feature map (``stage1`` ... by stage index), and
  ``maps``: each one's name, stage, channels and reduction (stride);
- ``source``, ``metrics``, ``attnzoo_version``, ``torch_version``, ``attnzoo_metadata_version``.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from attnzoo.errors import AttnzooError

METADATA_VERSION = 1
PROGRAM_METADATA_FILE = "attnzoo.json"  # the extra file of a torch.export archive that holds the metadata
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def model_identity(model: nn.Module) -> dict:
    """Architecture, options, preprocessing and label names of an attnzoo model (from its ``model.config``)."""
    from attnzoo.registry import config_of

    config = config_of(model)
    if config is None:
        raise AttnzooError("export needs a model built by attnzoo.create_model or attnzoo.load (it carries "
                           "`model.config`, which names the architecture); this model has none.")
    saved = config.to_dict()
    info = getattr(model, "feature_info", None)  # a features network (attnzoo.backbones.FeatureNet)
    features = None if info is None else [
        {"name": f"stage{entry['index']}", "stage": entry["index"], "channels": entry["num_chs"],
         "reduction": entry["reduction"], "module": entry["module"]} for entry in info.get_dicts()]
    return {
        "architecture": saved["architecture"],
        "num_classes": saved["num_classes"],
        "model_args": saved["model_args"],
        "preprocessing": saved["preprocessing"],
        "label_names": saved["label_names"],
        "features": features,
    }


def output_names(identity: Mapping) -> list[str]:
    """The graph's output names: ``logits``, or one per feature map (``stage1``, ``stage2``, ...)."""
    features = identity.get("features")
    return [OUTPUT_NAME] if not features else [entry["name"] for entry in features]


def crop_size(preprocessing: Mapping) -> int:
    size = preprocessing["input_size"]
    return int(size if isinstance(size, int) else list(size)[-1])


def describe(identity: Mapping, fold_preprocessing: bool, source: str, metrics: Mapping | None = None) -> dict:
    """The metadata of one export, as Python values (see the module docstring)."""
    from attnzoo._version import __version__

    pre = identity["preprocessing"]
    size = crop_size(pre)
    preprocessing = {
        "input_size": [3, size, size],
        "resize_to": int(math.floor(size / pre.get("crop_pct", 0.875))),
        "crop_pct": pre.get("crop_pct", 0.875),
        "interpolation": pre.get("interpolation", "bilinear"),
        "mean": [float(v) for v in pre["mean"]],
        "std": [float(v) for v in pre["std"]],
    }
    if fold_preprocessing:
        image = {"dtype": "uint8", "normalize": "in_graph",
                 "note": "RGB pixel values 0-255; the graph computes (pixel / 255 - mean) / std itself"}
    else:
        image = {"dtype": "float32", "normalize": "caller",
                 "note": "RGB pixels scaled to 0-1, then (pixel - mean) / std, done by the caller"}
    return {
        "attnzoo_metadata_version": METADATA_VERSION,
        "architecture": identity["architecture"],
        "num_classes": identity["num_classes"],
        "model_args": identity["model_args"],
        "label_names": identity["label_names"],
        "preprocessing": preprocessing,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, "height", "width"], "layout": "NCHW",
                  "channels": "RGB", **image},
        "output": _output(identity),
        "source": source,
        "metrics": dict(metrics or {}),
        "attnzoo_version": __version__,
        "torch_version": torch.__version__,
    }


def _output(identity: Mapping) -> dict:
    features = identity.get("features")
    if not features:
        return {"name": OUTPUT_NAME, "shape": ["batch", identity["num_classes"]], "note": "class scores before softmax"}
    return {"names": output_names(identity),
            "maps": [{**entry, "shape": ["batch", entry["channels"], f"ceil(height/{entry['reduction']})",
                                         f"ceil(width/{entry['reduction']})"]} for entry in features],
            "note": "feature maps of the backbone's stages (NCHW), from stride 2 to 32 (reduction)"}


def encode(metadata: Mapping) -> dict[str, str]:
    """One JSON string per key, as ONNX's ``metadata_props`` holds them."""
    return {str(key): json.dumps(value) for key, value in metadata.items()}


def decode(props: Mapping[str, str]) -> dict:
    """The inverse of :func:`encode`; keys that are not JSON (written by another tool) stay strings."""
    out = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def read_metadata(path: str | Path) -> dict:
    """The metadata of an exported ``.onnx`` file or ``torch.export`` archive, decoded (no weights are read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AttnzooError(f"no such file: {str(path)!r}.")
    if zipfile.is_zipfile(path):  # a torch.export archive; read the one JSON entry, nothing is unpickled
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == PROGRAM_METADATA_FILE]
            if not names:
                raise AttnzooError(f"{str(path)!r} is a torch.export archive without attnzoo's {PROGRAM_METADATA_FILE}; "
                                   "was it written by `attnzoo export --format pt2`?")
            return json.loads(archive.read(names[0]).decode("utf-8"))
    from attnzoo.extras import require

    require("export", "reading ONNX metadata", only=("onnx",))
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - any parse failure means "not an ONNX file"
        raise AttnzooError(f"{str(path)!r} is neither an ONNX model nor a torch.export archive ({type(err).__name__}).") from None
    props = {p.key: p.value for p in model.metadata_props}
    if "architecture" not in props:
        raise AttnzooError(f"{str(path)!r} has no attnzoo metadata (metadata_props: {', '.join(props) or 'none'}).")
    return decode(props)
