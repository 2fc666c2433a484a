"""Plot ``bench cluster`` JSON: ``python -m saltext_raft bench plot FILE.json… -o OUT.png``.

Three panels, one bar per system and input file, with the targets drawn in:

- commit latency p50 and p99 with one proposal outstanding (log scale; targets 1 ms / 5 ms);
- throughput with many proposals outstanding, on an empty log and on a long one (log scale;
  the log length is written on each bar; targets ≥ 2× PySyncObj on the empty log and, for
  the long log, ≥ 0.9× our empty-log figure);
- failover p50 and p99 (targets 0.5 s / 1 s).

Systems: ``ours``, ``pysyncobj`` and, where present, ``salt_core`` (with its storage) and
``salt_core.in_memory`` (no storage). A section that is missing or skipped is left out and
named in the footnote. Salt's core is driven in one process with an in-memory transport: the
footnote says so, and its bars are hatched.

matplotlib (the ``bench`` extra) is imported only here, lazily, with the Agg backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from saltext_raft.bench.cluster import TARGETS

DEFAULT_OUTPUT = os.path.join("docs", "bench", "cluster.png")

#: (JSON path, legend label, colour, hatched: not like for like)
SYSTEMS = (
    ("ours", "saltext-raft (3 processes)", "#1f5fa8", False),
    ("pysyncobj", "PySyncObj (3 processes, no fsync)", "#e07b16", False),
    ("salt_core", "Salt 3008 core (1 process)", "#2e8b3a", True),
    ("salt_core.in_memory", "Salt 3008 core, no storage (1 process)", "#9ad39a", True),
)

TARGET_COLOUR = "#c0392b"


class MissingMatplotlib(RuntimeError):
    pass


def _pyplot():
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MissingMatplotlib(
            "bench plot needs matplotlib: pip install 'saltext-raft[bench]' "
            "(or pip install matplotlib); nox -s bench installs it"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def _get(result: dict, path: str):
    node = result
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def system_figures(result: dict, path: str) -> tuple[dict | None, str | None]:
    """(the section, None) when it has figures; (None, why not) otherwise."""
    section = _get(result, path)
    if section is None:
        return None, "not in this JSON"
    if "skipped" in section:
        return None, f"skipped: {section['skipped']}"
    if not any(section.get(k) is not None for k in ("latency_p50_ms", "throughput_per_s")):
        return None, "no figures"
    return section, None


def _run_label(result: dict, path: str) -> str:
    date = str(result.get("date", "?"))[:16].replace("T", " ")
    quick = " quick" if (result.get("options") or {}).get("quick") else ""
    return f"{date}{quick}"


def _num(value):
    return value if isinstance(value, (int, float)) and value > 0 else None


def _fmt(value: float, unit: str) -> str:
    if value >= 10_000:
        text = f"{value / 1000:.0f}k"
    elif value >= 1000:
        text = f"{value / 1000:.1f}k"
    elif value >= 10:
        text = f"{value:.0f}"
    elif value >= 1:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2g}"
    return text + unit


def collect(results: list[tuple[str, dict]]) -> tuple[list[dict], list[str]]:
    """One bar series per (file, system) that has figures, and footnotes for the rest."""
    series, notes = [], []
    many = len(results) > 1
    for k, (name, result) in enumerate(results):
        for path, label, colour, hatched in SYSTEMS:
            section, why = system_figures(result, path)
            if section is None:
                parent_missing = path == "salt_core.in_memory" and (
                    system_figures(result, "salt_core")[0] is None
                )
                if not parent_missing:
                    notes.append(f"{label}{' (' + name + ')' if many else ''}: {why}")
                continue
            big = section.get("big_log") or {}
            fail = section.get("failover") or {}
            series.append(
                {
                    "label": f"{label}, {_run_label(result, name)}" if many else label,
                    "colour": colour,
                    "hatched": hatched,
                    "alpha": 1.0 if k == len(results) - 1 else 0.55,
                    "latency": (
                        _num(section.get("latency_p50_ms")),
                        _num(section.get("latency_p99_ms")),
                    ),
                    "throughput": (
                        _num(section.get("throughput_per_s")),
                        _num(big.get("throughput_per_s")),
                    ),
                    "log_entries": big.get("log_entries"),
                    "failover": (_num(fail.get("p50_s")), _num(fail.get("p99_s"))),
                    "system": path,
                }
            )
    return series, notes


def _bars(ax, series: list[dict], key: str, groups: list[str], unit: str, log: bool, also=()):
    width = 0.8 / max(1, len(series))
    drawn = 0
    for i, s in enumerate(series):
        values = s[key]
        if not any(values):
            continue
        for group, value in enumerate(values):
            x = group + (i - (len(series) - 1) / 2) * width
            if value is None:
                continue
            ax.bar(
                x,
                value,
                width * 0.95,
                color=s["colour"],
                alpha=s["alpha"],
                hatch="//" if s["hatched"] else None,
                edgecolor="white" if s["hatched"] else s["colour"],
                linewidth=0,
            )
            text = _fmt(value, unit)
            if key == "throughput" and group == 1 and s["log_entries"]:
                text += f"\n@{_fmt(float(s['log_entries']), '')}"
            ax.annotate(
                text,
                (x, value),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 1),
                textcoords="offset points",
            )
            drawn += 1
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    values = [v for s in series for v in s[key] if v] + [v for v in also if v]
    if log and values:
        # Bars start at a whole decade below the smallest value, not at an arbitrary floor
        # that would exaggerate the ratios between bars.
        ax.set_yscale("log")
        ax.set_ylim(10 ** math.floor(math.log10(min(values) * 0.99)), max(values) * 3)
    elif values:
        ax.set_ylim(0, max(values) * 1.3)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.set_axisbelow(True)
    return drawn


def _target(ax, x: float, value, span: float = 0.42):
    if value:
        ax.hlines(value, x - span, x + span, colors=TARGET_COLOUR, linestyles="dashed", lw=1.2)


def _target_note(ax, text: str):
    ax.text(
        0.01,
        0.99,
        f"- - target: {text}",
        transform=ax.transAxes,
        fontsize=7.5,
        color=TARGET_COLOUR,
        va="top",
        ha="left",
    )


def build(results: list[tuple[str, dict]], output: str, title: str | None = None) -> str:
    """Draw the three panels for ``results`` ([(name, bench JSON)], oldest first) into
    ``output`` (PNG) and return its path."""
    plt = _pyplot()
    series, notes = collect(results)
    newest = results[-1][1] if results else {}
    targets = dict(TARGETS)  # the benchmark's own, for JSON that predates its targets block
    for name, verdict in (newest.get("targets") or {}).items():
        if isinstance(verdict, dict) and verdict.get("target") is not None:
            targets[name] = verdict["target"]

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6))
    ax = axes[0]
    p50, p99 = targets["latency_p50_ms"], targets["latency_p99_ms"]
    _bars(ax, series, "latency", ["p50", "p99"], " ms", log=True, also=(p50, p99))
    ax.set_title("(a) commit latency, 1 outstanding")
    ax.set_ylabel("ms (log scale)")
    _target(ax, 0, p50)
    _target(ax, 1, p99)
    _target_note(ax, f"p50 ≤ {p50:g} ms, p99 ≤ {p99:g} ms")

    ax = axes[1]
    newest_series = {s["system"]: s for s in series if s["alpha"] == 1.0}
    theirs = newest_series.get("pysyncobj", {}).get("throughput", (None, None))[0]
    ours = newest_series.get("ours", {}).get("throughput", (None, None))[0]
    ratio = targets["throughput_ratio_vs_pysyncobj"]
    big_ratio = targets["big_log_throughput_ratio"]
    lines = (ratio * theirs if theirs else None, big_ratio * ours if ours else None)
    _bars(ax, series, "throughput", ["empty log (b)", "long log (c)"], "/s", True, lines)
    ax.set_title("(b, c) throughput, many outstanding")
    ax.set_ylabel("committed entries per second (log scale)")
    _target(ax, 0, lines[0])
    _target(ax, 1, lines[1])
    _target_note(ax, f"(b) ≥ {ratio:g}× PySyncObj, (c) ≥ {big_ratio:g}× our (b)")

    ax = axes[2]
    p50, p99 = targets["failover_p50_s"], targets["failover_p99_s"]
    _bars(ax, series, "failover", ["p50", "p99"], " s", log=False, also=(p50, p99))
    ax.set_title("(d) failover: leader killed → new leader committed")
    ax.set_ylabel("seconds")
    _target(ax, 0, p50)
    _target(ax, 1, p99)
    _target_note(ax, f"p50 ≤ {p50:g} s, p99 ≤ {p99:g} s")

    handles, labels, seen = [], [], set()
    for s in series:
        if s["label"] in seen:
            continue
        seen.add(s["label"])
        handles.append(
            plt.Rectangle(
                (0, 0),
                1,
                1,
                facecolor=s["colour"],
                alpha=s["alpha"],
                hatch="//" if s["hatched"] else None,
                edgecolor="white",
            )
        )
        labels.append(s["label"])
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            ncol=min(4, len(handles)),
            fontsize=8,
            bbox_to_anchor=(0.5, 0.93),
            frameon=False,
        )
    if title is None:
        machine = newest.get("machine") or {}
        load = machine.get("loadavg_at_start") or []
        title = (
            f"bench cluster ({results[-1][0] if results else '-'}), "
            f"{_run_label(newest, '')} UTC, {machine.get('cpus', '?')} CPUs, "
            f"Python {machine.get('python', '?')}"
            + (f", load average {load[0]:.1f} at start" if load else "")
        )
    fig.suptitle(title, fontsize=11, y=0.99)
    foot = []
    if any(s["system"].startswith("salt_core") for s in series):
        foot.append(
            "Hatched: Salt 3008 core Raft, one process, in-memory transport, "
            "for reference only — not a like-for-like comparison."
        )
    foot += notes
    if foot:
        fig.text(0.01, 0.01, "\n".join(foot), fontsize=7, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.02 + 0.025 * len(foot), 1, 0.9))
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m saltext_raft bench plot", description=__doc__.split("\n")[0]
    )
    p.add_argument("files", nargs="+", help="bench cluster JSON files, oldest first")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"PNG (default {DEFAULT_OUTPUT})")
    p.add_argument("--title", default=None)
    o = p.parse_args(argv)
    results = []
    for path in o.files:
        with open(path, encoding="utf-8") as fh:
            results.append((os.path.basename(path), json.load(fh)))
    try:
        out = build(results, o.output, o.title)
    except MissingMatplotlib as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0
