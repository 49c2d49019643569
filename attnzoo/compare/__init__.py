"""``attnzoo compare``: several models under one recipe, several seeds each, and a report a reviewer accepts.

    >>> from attnzoo import compare
    >>> study = compare.create_or_continue("study", "configs/quickstart.yaml", ["r18", "se_r18", "eca_r18"], seeds=3)
    >>> compare.run_local(study)            # every (model, seed) an `attnzoo fit`; a re-run continues
    >>> compare.write_report(study)         # report.md, .csv, .json and .png in the study folder
"""

from attnzoo.compare.report import write_report
from attnzoo.compare.runner import run_local, run_task
from attnzoo.compare.study import Study, create_or_continue, open_study

__all__ = ["Study", "create_or_continue", "open_study", "run_local", "run_task", "write_report"]
