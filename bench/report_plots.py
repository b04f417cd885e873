"""The plots of bench/report (matplotlib, written as SVG), and the summaries they share
with its tables."""

import math
import statistics
import sys
from collections import defaultdict

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
except ImportError:
    sys.exit("bench/report: needs matplotlib (apt-get install python3-matplotlib)")

SWITCH_TOOLS = ("livefs", "copy", "sysext")
SWITCH_LABELS = {
    "livefs": "livefs apply",
    "copy": "copy into overlayfs",
    "sysext": "systemd-sysext refresh",
}
COLORS = {
    "livefs": "#1f77b4",
    "copy": "#ff7f0e",
    "sysext": "#2ca02c",
    "overlayfs": "#ff7f0e",
    "fuse-overlayfs": "#9467bd",
    "unionfs-fuse": "#8c564b",
    "mergerfs": "#e377c2",
    "livefs-np": "#17becf",
}
SERVE_PEERS = (
    "native",
    "overlayfs",
    "fuse-overlayfs",
    "unionfs-fuse",
    "mergerfs",
    "livefs",
    "livefs-np",
)

_png = False


def setup(png=False):
    """Text stays text in the SVGs (smaller, searchable); `png`: a PNG beside each."""
    global _png
    _png = png
    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 110,
        }
    )


def _save(fig, out, name):
    fig.tight_layout()
    fig.savefig(out / f"{name}.svg")
    if _png:
        fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)
    return f"{name}.svg"


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _plain(value, _pos=None):
    """1, 10, 100, 1,000 rather than 10^0 ... on log axes."""
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:g}"


# --- switch ---------------------------------------------------------------------------------


def switch_summary(rows):
    """{(tool, files): runs, median/min/max ms, sums of the reader's counts, bad_span}."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("files"):
            groups[(r["tool"], int(r["files"]))].append(r)
    out = {}
    for key, rs in groups.items():
        ms = [float(r["ms"]) for r in rs]
        out[key] = {
            "runs": len(rs),
            "median": statistics.median(ms),
            "min": min(ms),
            "max": max(ms),
            "bad_span": max(_number(r.get("bad_ms")) or 0.0 for r in rs),
        }
        for k in ("checks", "bad", "vanished", "mixed", "torn"):
            out[key][k] = sum(int(r[k]) for r in rs)
    return out


def switch_tree_files(rows):
    sizes = [int(r["tree_files"]) for r in rows if r.get("tree_files")]
    return f"{max(sizes):,}" if sizes else None


def plot_switch(rows, out):
    summary = switch_summary(rows)
    if not summary:
        return []
    tools = [t for t in SWITCH_TOOLS if any(k[0] == t for k in summary)]
    names = []

    fig, ax = plt.subplots(figsize=(7, 4.6))
    for t in tools:
        sizes = sorted(n for (tool, n) in summary if tool == t)
        med = [summary[(t, n)]["median"] for n in sizes]
        lo = [m - summary[(t, n)]["min"] for m, n in zip(med, sizes)]
        hi = [summary[(t, n)]["max"] - m for m, n in zip(med, sizes)]
        ax.errorbar(
            sizes,
            med,
            yerr=[lo, hi],
            marker="o",
            capsize=3,
            color=COLORS[t],
            label=SWITCH_LABELS[t],
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("changed files")
    ax.set_ylabel("update latency (ms, log)")
    ax.set_title("Update latency against the number of changed files")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 1.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(tools), frameon=False)
    names.append(_save(fig, out, "update-latency"))

    # The reader's bad checks: one group of bars per size, one bar per tool.
    sizes = sorted({n for (_, n) in summary})
    fig, ax = plt.subplots(figsize=(7, 4.2))
    width = 0.8 / len(tools)
    for i, t in enumerate(tools):
        xs, fracs = [], []
        for j, n in enumerate(sizes):
            s = summary.get((t, n))
            if s is None:
                continue
            xs.append(j + (i - (len(tools) - 1) / 2) * width)
            fracs.append(100 * s["bad"] / s["checks"] if s["checks"] else 0.0)
        bars = ax.bar(xs, fracs, width, color=COLORS[t], label=SWITCH_LABELS[t])
        # Zero is a result too: say it on the bar that has no height.
        ax.bar_label(bars, labels=[f"{f:.0f}" if f >= 1 else f"{f:.1g}" for f in fracs],
                     fontsize=7, padding=1)
    ax.set_xticks(range(len(sizes)), [f"{n:,}" for n in sizes])
    ax.set_xlabel("changed files")
    ax.set_ylabel("bad checks during the switch (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Reader checks that saw a file vanish, a mixed or a torn version")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(tools), frameon=False)
    names.append(_save(fig, out, "reader-anomalies"))
    return names


# --- serve -----------------------------------------------------------------------------------


def _slug(text):
    keep = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(p for p in keep.split("-") if p)[:40]


def plot_serve(rows, out):
    """One chart per workload: ratio to native of every peer, cold and warm side by side."""
    workloads = []
    for r in rows:
        if r.get("cache") in ("cold", "warm") and r["workload"] not in workloads:
            workloads.append(r["workload"])
    names = []
    for workload in workloads:
        mine = [r for r in rows if r["workload"] == workload]
        caches = [c for c in ("cold", "warm") if any(r["cache"] == c for r in mine)]
        peers = [
            p
            for p in SERVE_PEERS
            if p != "native" and any(r["peer"] == p and _number(r["ratio"]) for r in mine)
        ]
        if not peers:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        # Bars of one width in every chart, whether 1 peer or 6 (over-mounted workloads
        # have fewer).
        width = 0.8 / len(SERVE_PEERS[1:])
        top = 1.0
        for i, p in enumerate(peers):
            xs, ratios = [], []
            for j, c in enumerate(caches):
                ratio = next(
                    (_number(r["ratio"]) for r in mine if r["peer"] == p and r["cache"] == c), None
                )
                if ratio:
                    xs.append(j + (i - (len(peers) - 1) / 2) * width)
                    ratios.append(ratio)
                    top = max(top, ratio)
            bars = ax.bar(xs, ratios, width, color=COLORS.get(p, "#1f77b4"), label=p)
            ax.bar_label(bars, labels=[f"{x:.2f}" if x < 10 else f"{x:.0f}" for x in ratios], fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        bottom = min(0.5, min(_number(r["ratio"]) or 1 for r in mine) / 1.5)
        ax.set_ylim(bottom, top * 2)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        ax.yaxis.set_minor_formatter(NullFormatter())
        native = {r["cache"]: r for r in mine if r["peer"] == "native"}
        labels = []
        for c in caches:
            n = native.get(c, {})
            v = _number(n.get("value"))
            unit = n.get("unit", "s")
            shown = "" if v is None else (f"{v * 1e3:.0f} ms" if unit == "s" and v < 1 else
                                           f"{v:.2f} s" if unit == "s" else f"{v:.0f} {unit}")
            labels.append(f"{c}\n(native {shown})")
        ax.set_xticks(range(len(caches)), labels)
        ax.set_xlim(-0.6, len(caches) - 0.4)
        what = "time" if native.get(caches[0], {}).get("unit", "s") == "s" else "growth"
        ax.set_ylabel(f"{what} ÷ native's (log; lower is better)")
        ax.set_title(workload)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        names.append(_save(fig, out, "serve-" + _slug(workload)))
    return names


# --- hotfix -----------------------------------------------------------------------------------


def hotfix_samples(samples):
    by = defaultdict(list)
    for r in samples:
        v = _number(r.get("ms"))
        if v is not None:
            by[r["workload"]].append(v)
    return {k: sorted(v) for k, v in by.items()}


def plot_hotfix(samples, out):
    by = hotfix_samples(samples)
    if not by:
        return []
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(9, 4))
    lo = min(v[0] for v in by.values())
    hi = max(v[-1] for v in by.values())
    lo, hi = max(lo, 0.01), max(hi, lo * 1.01)
    bins = [lo * (hi / lo) ** (i / 40) for i in range(41)]
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for (name, ms), color in zip(by.items(), colors):
        hist.hist(ms, bins=bins, alpha=0.55, color=color, label=name)
        ys = [(i + 1) / len(ms) for i in range(len(ms))]
        cdf.step(ms, ys, where="post", color=color, label=name)
        p50 = ms[math.ceil(0.5 * len(ms)) - 1]
        cdf.axvline(p50, color=color, linestyle=":", linewidth=1)
    for ax in (hist, cdf):
        ax.set_xscale("log")
        # 1-2-3-5 ticks: the samples often span less than a decade.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("edit to visible (ms, log)")
    hist.set_ylabel("edits")
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    hist.set_title("Distribution")
    cdf.axvline(20, color="grey", linestyle="--", linewidth=1, label="goal: median < 20 ms")
    cdf.set_ylabel("fraction of edits visible")
    cdf.set_ylim(0, 1.02)
    cdf.set_title("Cumulative (dotted: median)")
    cdf.legend(loc="lower right", fontsize=8)
    fig.suptitle("Hotfix: single-file edit to visible through the view")
    return [_save(fig, out, "hotfix-latency")]
