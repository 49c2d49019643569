"""Make docs/compare.md's comparison: ResNet-18 plain and with each of the six attentions, under the quickstart
recipe (configs/quickstart.yaml: 5 epochs on 8,000 generated 32x32 shapes), 3 seeds each, 21 runs.

    python docs/make_comparison.py                       # train what is missing (resumable), then write the docs
    python docs/make_comparison.py --study DIR --report  # only write the docs from the runs finished in DIR

The training is `attnzoo compare` itself; a stopped study continues where it stopped (run the same command).
What lands in docs/: compare/report.json, compare/report.csv and compare/report.png as the study wrote them,
and the table between the markers in docs/compare.md. A study that has not finished is written all the same,
labelled as partial with its count of finished runs: never numbers of runs that did not finish.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE = DOCS / "compare.md"
OUT = DOCS / "compare"
RECIPE = ROOT / "configs" / "quickstart.yaml"
MODELS = ["r18", "se_r18", "eca_r18", "gct_r18", "gc_r18", "cbam_r18", "gam_r18"]
SEEDS = 3
START, END = "<!-- comparison:start (docs/make_comparison.py) -->", "<!-- comparison:end -->"


def attnzoo(*args: str) -> None:
    command = [sys.executable, "-m", "attnzoo", "compare", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=False)  # a failed run is in the report, as failed


def block(study: Path) -> str:
    report = json.loads((study / "report.json").read_text())
    finished = sum(row["runs"]["finished"] for row in report["models"])
    total = len(report["models"]) * report["study"]["seeds"]
    table = (study / "report.md").read_text().strip()
    machine = (report.get("bench") or {}).get("machine") or {}
    lines = []
    if finished < total:
        lines += [f"!!! warning \"Partial: {finished} of {total} runs finished\"",
                  "    The study was still running when this page was written. The table holds only the runs that "
                  "finished; a model with one run has no interval, and the ranking can change as runs finish. "
                  "`python docs/make_comparison.py` continues it and rewrites this part.", ""]
    lines += [table, "", "![accuracy against cost](compare/report.png)", ""]
    seconds = list(_run_seconds(study))
    if seconds:
        lines.append(f"Each run took {min(seconds) / 60:.1f} to {max(seconds) / 60:.1f} minutes of wall time "
                     f"(mean {sum(seconds) / len(seconds) / 60:.1f}) on "
                     f"{machine.get('cpu', 'this machine')}, shared with other work at the time.")
    return "\n".join(lines)


def _run_seconds(study: Path):
    for status in sorted(study.glob("runs/*/seed*/status.json")):
        record = json.loads(status.read_text())
        if record.get("state") != "finished":
            continue
        if "total_seconds" in record:  # every part of the run whose end was recorded
            yield record["total_seconds"]
        elif not record.get("resumed"):  # a study from before total_seconds: only runs done in one part
            yield record["seconds"]


def write_docs(study: Path) -> None:
    OUT.mkdir(exist_ok=True)
    for name in ("report.json", "report.csv", "report.png"):
        if (study / name).exists():
            shutil.copyfile(study / name, OUT / name)
    text = PAGE.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    PAGE.write_text(f"{head}{START}\n{block(study)}\n{END}{tail}")
    print(f"wrote {PAGE.relative_to(ROOT)} and {OUT.relative_to(ROOT)}/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=ROOT / "runs" / "compare-quickstart",
                        help="the study folder (default: runs/compare-quickstart)")
    parser.add_argument("--report", action="store_true", help="only report what has finished; train nothing")
    parser.add_argument("--parallel", type=int, default=1, help="fits at once")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.report:
        attnzoo(str(args.study), "--report")
    elif (args.study / "study.json").exists():
        attnzoo(str(args.study), "--parallel", str(args.parallel))
    else:
        attnzoo("--models", *MODELS, "--config", str(RECIPE.relative_to(ROOT)), "--seeds", str(SEEDS),
                "--out", str(args.study), "--parallel", str(args.parallel))
    write_docs(args.study)


if __name__ == "__main__":
    main()
