"""See what the attention does: record every attention module's gates, Grad-CAM, the papers' figures.

    >>> from attnzoo.analysis import record_attention, explain
    >>> with record_attention(model) as recording:
    ...     model(images)
    >>> recording["layer3.1.attn"].channel_gate      # [B, C]
    >>> explain("runs/quickstart/checkpoints/last.ckpt", ["images/"], "explained/")   # pictures + summary.json

``attnzoo.analysis.recorder`` needs nothing beyond torch; the pictures and Grad-CAM need the ``viz``
extra (``pip install 'attnzoo[viz]'``: matplotlib and captum).
"""

from attnzoo.analysis.recorder import AttentionRecord, AttentionRecorder, attention_modules, is_compiled, record_attention

__all__ = ["AttentionRecord", "AttentionRecorder", "attention_modules", "explain", "is_compiled", "record_attention"]


def __getattr__(name: str):
    if name == "explain":  # imports the data and weights code only when asked for
        from attnzoo.analysis.explainer import explain

        return explain
    raise AttributeError(f"module 'attnzoo.analysis' has no attribute {name!r}")
