"""Make docs/compare.md's comparison: ResNet-18 plain and with each of the six attentions, under the quickstart
recipe (configs/quickstart.yaml: 5 epochs on 8,000 generated 32x32 shapes), 3 seeds each, 21 runs.

    python docs/make_comparison.py                       # train what is missing (resumable), then write the docs
    python docs/make_comparison.py --study DIR --report  # only write the docs from the runs finished in DIR

The training is `attnzoo compare` itself; a stopped study continues where it stopped (run the same command).
What lands in docs/: compare/report.json, compare/report.csv and compare/report.png as the study wrote them,
the table between the markers in docs/compare.md, and the short ranking over seeds between the markers in
docs/analysis.md (which replaced that page's single-seed accuracies as a ranking). A study that has not finished is written all the same,
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

from attnzoo.compare.statistics import distinguishable
from attnzoo.compare.study import DEFAULT_SEEDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE = DOCS / "compare.md"
OUT = DOCS / "compare"
RECIPE = ROOT / "configs" / "quickstart.yaml"
MODELS = ["r18", "se_r18", "eca_r18", "gct_r18", "gc_r18", "cbam_r18", "gam_r18"]
START, END = "<!-- comparison:start (docs/make_comparison.py) -->", "<!-- comparison:end -->"
ANALYSIS = DOCS / "analysis.md"
SEEDS_START, SEEDS_END = "<!-- seeds:start (docs/make_comparison.py) -->", "<!-- seeds:end -->"


def attnzoo(*args: str) -> None:
    command = [sys.executable, "-m", "attnzoo", "compare", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=False)  # a failed run is in the report, as failed


def block(study: Path, report: dict) -> str:
    finished, total = report["runs"]["finished"], report["runs"]["total"]
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


def seeds_block(report: dict) -> str:
    """analysis.md's ranking: final top-1 over the seeds, best mean first, with what the seeds can tell apart."""
    rows = sorted(report["models"], key=lambda row: -(row["final_top1"]["mean"] or 0))
    seeds = report["study"]["seeds"]
    lines = [f"| model | final val top-1 over {seeds} seeds: mean [95% interval] | − plain ResNet-18, paired "
             "[95% interval] | told apart from plain? |", "|---|---:|---:|---|"]
    for row in rows:
        top1, d = row["final_top1"], row.get("final_top1_vs_reference")
        interval = f"{top1['mean']:.1f}% [{top1['ci_low']:.1f}, {top1['ci_high']:.1f}]" if top1["ci_low"] is not None \
            else f"{top1['mean']:.1f}% ({top1['n']} run)"
        if d is None:
            diff, verdict = "(reference)", ""
        elif d["ci_low"] is None:
            diff, verdict = f"{d['mean']:+.1f}", "too few seeds"
        else:
            diff = f"{d['mean']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"
            verdict = "yes" if distinguishable(d) else "no"
        lines.append(f"| `{row['model']}` | {interval} | {diff} | {verdict} |")
    return "\n".join(lines)


def replace_between(path: Path, start: str, end: str, content: str) -> None:
    text = path.read_text()
    head, found, rest = text.partition(start)
    if not found:
        raise SystemExit(f"{path}: marker {start!r} missing")
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{content}\n{end}{tail}")


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
    report = json.loads((study / "report.json").read_text())
    replace_between(PAGE, START, END, block(study, report))
    replace_between(ANALYSIS, SEEDS_START, SEEDS_END, seeds_block(report))
    print(f"wrote {PAGE.relative_to(ROOT)}, {OUT.relative_to(ROOT)}/ and the ranking in {ANALYSIS.relative_to(ROOT)}")


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
        attnzoo("--models", *MODELS, "--config", str(RECIPE.relative_to(ROOT)), "--seeds", str(DEFAULT_SEEDS),
                "--out", str(args.study), "--parallel", str(args.parallel))
    write_docs(args.study)


if __name__ == "__main__":
    main()
