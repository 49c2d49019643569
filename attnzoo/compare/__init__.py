"""``attnzoo compare``: several models under one recipe, several seeds each, and a report a reviewer accepts.

    >>> from attnzoo import compare
    >>> study = compare.create_or_continue("study", "configs/quickstart.yaml", ["r18", "se_r18", "eca_r18"], seeds=3)
    >>> compare.run_local(study)            # every (model, seed) an `attnzoo fit`; a re-run continues
    >>> compare.write_report(study)         # report.md, report.csv, report.json, report.png in the study folder
"""
