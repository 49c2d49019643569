"""The model card (README.md) of a published weight: front matter for the Hub, then what a reader needs.

The front matter is built by huggingface_hub (``ModelCardData``; the metrics as ``EvalResult`` s of the Hub's
model-index when the dataset is named), so the Hub and ``ModelCard.load`` read back exactly what was given.
The body says what the model is and which paper it implements, the metrics and the config that trained it,
gives a usage snippet, and the citations (the attention's paper and the backbone's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from attnzoo.registry import ModelConfig

# title, authors, venue, arXiv id, BibTeX key; the BibTeX entry is built from these.
PAPERS: dict[str, dict] = {
    "se": {
        "name": "SE (Squeeze-and-Excitation)",
        "title": "Squeeze-and-Excitation Networks",
        "authors": ["Jie Hu", "Li Shen", "Gang Sun"],
        "venue": "CVPR 2018",
        "booktitle": "Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)",
        "year": 2018,
        "arxiv": "1709.01507",
        "key": "hu2018squeeze",
        "code": "https://github.com/hujie-frank/SENet",
    },
    "eca": {
        "name": "ECA (Efficient Channel Attention)",
        "title": "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
        "authors": ["Qilong Wang", "Banggu Wu", "Pengfei Zhu", "Peihua Li", "Wangmeng Zuo", "Qinghua Hu"],
        "venue": "CVPR 2020",
        "booktitle": "Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)",
        "year": 2020,
        "arxiv": "1910.03151",
        "key": "wang2020eca",
        "code": "https://github.com/BangguWu/ECANet",
    },
    "gct": {
        "name": "GCT (Gated Channel Transformation)",
        "title": "Gated Channel Transformation for Visual Recognition",
        "authors": ["Zongxin Yang", "Linchao Zhu", "Yu Wu", "Yi Yang"],
        "venue": "CVPR 2020",
        "booktitle": "Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)",
        "year": 2020,
        "arxiv": "1909.11519",
        "key": "yang2020gated",
        "code": "https://github.com/z-x-yang/GCT",
    },
    "gc": {
        "name": "GC (Global Context block, GCNet)",
        "title": "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
        "authors": ["Yue Cao", "Jiarui Xu", "Stephen Lin", "Fangyun Wei", "Han Hu"],
        "venue": "ICCV Workshops 2019",
        "booktitle": "Proceedings of the IEEE/CVF International Conference on Computer Vision Workshops (ICCVW)",
        "year": 2019,
        "arxiv": "1904.11492",
        "key": "cao2019gcnet",
        "code": "https://github.com/xvjiarui/GCNet",
    },
    "cbam": {
        "name": "CBAM (Convolutional Block Attention Module)",
        "title": "CBAM: Convolutional Block Attention Module",
        "authors": ["Sanghyun Woo", "Jongchan Park", "Joon-Young Lee", "In So Kweon"],
        "venue": "ECCV 2018",
        "booktitle": "Proceedings of the European Conference on Computer Vision (ECCV)",
        "year": 2018,
        "arxiv": "1807.06521",
        "key": "woo2018cbam",
        "code": "https://github.com/Jongchan/attention-module",
    },
    "gam": {
        "name": "GAM (Global Attention Mechanism)",
        "title": "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial Interactions",
        "authors": ["Yichao Liu", "Zongru Shao", "Nico Hoffmann"],
        "venue": "arXiv 2021",
        "booktitle": None,
        "year": 2021,
        "arxiv": "2112.05561",
        "key": "liu2021global",
        "code": None,
    },
}

BACKBONE_PAPERS: dict[str, dict] = {
    "resnet": {
        "name": "ResNet",
        "title": "Deep Residual Learning for Image Recognition",
        "authors": ["Kaiming He", "Xiangyu Zhang", "Shaoqing Ren", "Jian Sun"],
        "venue": "CVPR 2016",
        "booktitle": "Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)",
        "year": 2016,
        "arxiv": "1512.03385",
        "key": "he2016deep",
    },
    "mobilenetv2": {
        "name": "MobileNetV2",
        "title": "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
        "authors": ["Mark Sandler", "Andrew Howard", "Menglong Zhu", "Andrey Zhmoginov", "Liang-Chieh Chen"],
        "venue": "CVPR 2018",
        "booktitle": "Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)",
        "year": 2018,
        "arxiv": "1801.04381",
        "key": "sandler2018mobilenetv2",
    },
}


def bibtex(paper: Mapping) -> str:
    fields = {"title": paper["title"], "author": " and ".join(paper["authors"]), "year": str(paper["year"])}
    if paper.get("booktitle"):
        kind = "inproceedings"
        fields["booktitle"] = paper["booktitle"]
    else:
        kind = "article"
        fields["journal"] = f"arXiv preprint arXiv:{paper['arxiv']}"
    body = ",\n".join(f"  {k}={{{v}}}" for k, v in fields.items())
    return f"@{kind}{{{paper['key']},\n{body}\n}}"


def _paper_line(paper: Mapping) -> str:
    authors = ", ".join(paper["authors"])
    return f"{authors}. *{paper['title']}*. {paper['venue']}. [arXiv:{paper['arxiv']}](https://arxiv.org/abs/{paper['arxiv']})"


def _table(metrics: Mapping) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return f"| metric | value |\n|---|---|\n{rows}"


def render_card(cfg: Mapping, repo_id: str | None = None, license: str = "apache-2.0",
                datasets: list[str] | None = None) -> str:
    config = ModelConfig.from_dict(cfg)
    attention, backbone = config.attention, config.backbone
    backbone_paper = BACKBONE_PAPERS["mobilenetv2" if backbone == "mobilenetv2" else "resnet"]
    paper = PAPERS.get(attention) if attention else None
    name = config.architecture
    what = (f"**{name}**: {backbone_paper['name']} ({backbone}) with {paper['name']} attention, as built by "
            f"`attnzoo.create_model({name!r})`." if paper else
            f"**{name}**: the plain {backbone_paper['name']} ({backbone}) without attention.")
    lines = [f"# {name}", "", what, ""]
    if paper:
        lines += [f"- Attention: {_paper_line(paper)}" + (f" (official code: {paper['code']})" if paper.get("code") else "")]
    lines += [f"- Backbone: {_paper_line(backbone_paper)}", ""]
    names = config.class_names
    lines += ["## Model", "", f"- classes: {config.num_classes}" + (
        f" ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})" if names else "")]
    if config.model_args:
        lines.append(f"- options: `{json.dumps(config.to_dict()['model_args'], sort_keys=True)}`")
    pre = config.preprocessing.to_dict()
    lines.append(f"- preprocessing: input {pre['input_size']}, {pre['interpolation']} resize, crop "
                 f"fraction {pre['crop_pct']}, mean {pre['mean']}, std {pre['std']}")
    lines += [f"- attnzoo version: {cfg.get('attnzoo_version')}", ""]
    source = cfg.get("source")
    if source:
        lines += ["## Source", "", source if isinstance(source, str) else "```json\n" + json.dumps(source, indent=2)
                  + "\n```", ""]
    lines += ["## Metrics", ""]
    lines += [_table(cfg["metrics"]) if cfg.get("metrics") else "No metrics were recorded with these weights.", ""]
    evaluation = cfg.get("evaluation")
    if evaluation:
        skipped = f", {evaluation['unreadable']} unreadable skipped" if evaluation.get("unreadable") else ""
        measured = (f"Measured with `attnzoo evaluate` on {evaluation['date']}: {evaluation['dataset']} "
                    f"({evaluation.get('split', 'validation')}, `{evaluation.get('data', '?')}`), "
                    f"{evaluation['images']} images{skipped}, {evaluation.get('classes', '?')} class folders mapped "
                    f"by {evaluation.get('class_mapping', '?')}: top-1 {evaluation['top1']:.4f}, top-5 "
                    f"{evaluation['top5']:.4f}.")
        lines += [measured, ""]
    if cfg.get("train_config"):
        lines += ["## Training configuration", "", "```json", json.dumps(cfg["train_config"], indent=2, sort_keys=True),
                  "```", ""]
    source_arg = f"hf-hub:{repo_id}" if repo_id else "path/to/this/directory"
    lines += ["## Usage", "", "```python", "import attnzoo", "",
              f'model = attnzoo.load("{source_arg}")  # or num_classes=N for a fresh head', "model.eval()",
              "print(model.config.preprocessing)  # the transforms these weights expect", "```", "",
              "The weights are a safetensors file: loading them runs no code.", "", "## Citation", "", "```bibtex"]
    lines += ["\n\n".join(bibtex(p) for p in (paper, backbone_paper) if p), "```", ""]
    from huggingface_hub import ModelCard, ModelCardData  # imported when a card is written, not with attnzoo

    tags = ["image-classification", "attnzoo", "pytorch", "safetensors", backbone] + ([attention] if attention else [])
    measured_on = evaluation["dataset"] if evaluation else None
    if measured_on and measured_on not in (datasets or []):
        datasets = [measured_on, *(datasets or [])]
    results = eval_results(cfg.get("metrics") or {}, measured_on or datasets[0]) if datasets else []
    data = ModelCardData(library_name="attnzoo", license=license, pipeline_tag="image-classification", tags=tags,
                         datasets=list(datasets) if datasets else None, model_name=name if results else None,
                         eval_results=results or None)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def card_front_matter(path) -> dict:
    """``license`` and ``datasets`` of an existing model card (for rendering it again), {} when there is none."""
    from pathlib import Path

    from huggingface_hub import ModelCard

    if not Path(path).is_file():
        return {}
    try:
        data = ModelCard.load(path).data
    except Exception:  # noqa: BLE001 - a card that does not parse is rendered afresh with the defaults
        return {}
    out = {}
    if data.license:
        out["license"] = data.license
    if data.datasets:
        out["datasets"] = list(data.datasets)
    return out


_METRIC = re.compile(r"^(?P<split>val|validation|test)/(?P<name>acc(?P<k>\d+)|[\w.-]+)$")
_SPLITS = {"val": "validation", "validation": "validation", "test": "test"}


def eval_results(metrics: Mapping, dataset: str) -> list:
    """The evaluation metrics (``val/acc1``, ``test/acc5``, ``val/loss`` ...) as the Hub's model-index results
    (``huggingface_hub.EvalResult``) on ``dataset``; training-time counters (epoch, global_step) are no
    evaluation and stay in the card's table only."""
    from huggingface_hub import EvalResult

    results = []
    for key, value in metrics.items():
        match = _METRIC.match(str(key))
        if not match or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        k = match["k"]
        results.append(EvalResult(
            task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
            dataset_split=_SPLITS[match["split"]], metric_type="accuracy" if k else match["name"],
            metric_name=f"top-{k} accuracy" if k else str(key), metric_value=float(value)))
    return results
