#!/usr/bin/python3
"""The test bench.report_smoke: `bench/report --smoke` into a temporary directory writes
every CSV, SVG plots that are SVG, and a report.md that shows every one of them.

  report_smoke_test.py BUILD_DIR
"""

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSVS = ("switch.csv", "serve.csv", "hotfix.csv", "hotfix-samples.csv")
# At least these plots; bench_serve adds one per workload.
PLOTS = ("update-latency.svg", "reader-anomalies.svg", "hotfix-latency.svg")


def main():
    build = Path(sys.argv[1])
    failures = []
    with tempfile.TemporaryDirectory(prefix="livefs-report-smoke-") as tmp:
        out = Path(tmp) / "report"
        rc = subprocess.run(
            [str(HERE / "report"), "--smoke", "--build", str(build), "--out", str(out)]
        ).returncode
        if rc != 0:
            failures.append(f"bench/report --smoke exited {rc}")
        for name in CSVS:
            lines = (out / name).read_text().splitlines() if (out / name).exists() else []
            if len(lines) < 2:
                failures.append(f"{name}: missing or without a row")
        svgs = sorted(p.name for p in out.glob("*.svg"))
        for name in PLOTS:
            if name not in svgs:
                failures.append(f"{name}: not written")
        if not any(s.startswith("serve-") for s in svgs):
            failures.append("no serve-*.svg")
        for name in svgs:
            try:
                root = ElementTree.parse(out / name).getroot()
            except ElementTree.ParseError as e:
                failures.append(f"{name}: not XML ({e})")
                continue
            if not root.tag.endswith("svg"):
                failures.append(f"{name}: its root is <{root.tag}>, not <svg>")
        report = (out / "report.md").read_text() if (out / "report.md").exists() else ""
        shown = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report))
        for name in svgs:
            if name not in shown:
                failures.append(f"report.md does not show {name}")
        for name in sorted(shown - set(svgs)):
            failures.append(f"report.md shows {name}, which is not there")
        if "| livefs apply |" not in report:
            failures.append("report.md has no reader row of livefs")
    for f in failures:
        print("FAIL:", f)
    print("bench.report_smoke:", "failed" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
