"""Markdown tables of a benchmark run (printed, and saved next to the JSON)."""

from __future__ import annotations

import statistics
from typing import Any

from bench.extract import ExtractResult, Series
from bench.machine import describe_markdown

# Issue 13: the extract step within 1.08x of its floor (median of repetitions).
TARGET_RATIO = 1.08
TARGET_PEAK_MB = 500
_FLOORS = ("floor_exact", "floor_unordered", "scalar_only")


def _s(value: float) -> str:
    return f"{value:.2f}"


def _spread(series: Series) -> str:
    return f"{_s(min(series.seconds))}-{_s(max(series.seconds))}"


def _mb(value: float) -> str:
    return f"{value:.0f}"


def extract_table(result: ExtractResult) -> str:
    rows = result.loaded.rows
    floor = result.series["floor_exact"].median
    loads = ", ".join(str(x) for x in result.load_average)
    lines = [
        f"1-minute load average after each repetition: {loads}",
        "",
        "| measurement | median s | min-max s | rows/s | vs floor | client CPU s "
        "| server CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for series in result.series.values():
        peak = _mb(max(series.peak_rss_mb)) if series.peak_rss_mb else "-"
        ratio = f"{series.median / floor:.2f}x"
        cpu_cells = [
            _s(statistics.median(values)) if (values := series.extra.get(key)) else "-"
            for key in ("client_cpu_s", "server_cpu_s")
        ]
        lines.append(
            f"| {series.label} | {_s(series.median)} | {_spread(series)} | "
            f"{rows / series.median:,.0f} | {ratio} | {' | '.join(cpu_cells)} | {peak} |"
        )
    return "\n".join(lines)


def extract_summary(result: ExtractResult) -> str:
    loaded = result.loaded
    ours = result.series["ours"]
    ratio = result.ratio("floor_exact")
    ratio_unordered = result.ratio("floor_unordered")
    peak = max(ours.peak_rss_mb)
    held = any(ours.extra.get("held_back", []))
    plan = result.explain
    return "\n".join(
        [
            f"- hour {loaded.hour:%Y-%m-%d %H:%M} UTC: {loaded.rows:,} rows, metadata "
            f"~{loaded.metadata_bytes_avg:,} B/row (padding {loaded.padding_bytes} B); "
            + (
                "reused from an earlier run"
                if loaded.reused
                else f"loaded in {loaded.load_s:.0f} s incl. VACUUM ANALYZE"
            ),
            f"- ours / floor: **{ratio:.2f}x** against the exact query (with ORDER BY; median "
            f"of back-to-back pairs {result.paired_ratio('floor_exact'):.2f}x), "
            f"{ratio_unordered:.2f}x against it without ORDER BY "
            f"(target ≤ {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'missed'})",
            f"- ours peak RSS: **{_mb(peak)} MB** max over repetitions "
            f"({', '.join(_mb(m) for m in ours.peak_rss_mb)}); "
            f"{_mb(result.baseline_rss_mb)} MB after imports "
            f"(target < {TARGET_PEAK_MB} MB: {'met' if peak < TARGET_PEAK_MB else 'missed'})",
            f"- Parquet: {result.parquet_bytes / 1e6:.1f} MB "
            f"({result.parquet_bytes / loaded.rows:.0f} B/row, zstd); COPY binary stream "
            f"{result.copy_bytes['floor_exact'] / 1e6:.0f} MB, scalar columns only "
            f"{result.copy_bytes.get('scalar_only', 0) / 1e6:.0f} MB"
            + ("; **the hour was held back by a blocking check**" if held else ""),
            f"- server plan: {' → '.join(plan['nodes'])}; EXPLAIN ANALYZE execution "
            f"{plan['execution_s']:.2f} s (no rows sent)"
            + (f", JIT {plan['jit_s']:.2f} s" if plan.get("jit_s") else ""),
        ]
    )


def scaling_table(results: list[ExtractResult]) -> str:
    extra = [name for name in results[0].series if name not in _FLOORS and name != "ours"]
    header = "| rows/hour | floor s (exact) | ours s | ours / floor | ours peak RSS MB |"
    header += "".join(f" {name} s | {name} / floor | {name} peak RSS MB |" for name in extra)
    lines = [header + " Parquet MB |", "|---:" * (6 + 3 * len(extra)) + "|"]
    for result in results:
        floor = result.series["floor_exact"].median
        cells = [f"{result.loaded.rows:,}", _s(floor)]
        for name in ("ours", *extra):
            series = result.series[name]
            cells += [
                _s(series.median),
                f"{series.median / floor:.2f}x",
                _mb(max(series.peak_rss_mb)),
            ]
        cells.append(f"{result.parquet_bytes / 1e6:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cbf_table(cbf: list[dict[str, Any]]) -> str:
    lines = [
        "| CBF input | rows | line items | body MB | build s (median, min-max) "
        "| render s (median, min-max) | total s (median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in cbf:
        build, render, total = entry["build"], entry["render"], entry["total"]
        lines.append(
            f"| {entry['source']} | {entry['rows']:,} | {entry['line_items']:,} | "
            f"{entry['body_bytes'] / 1e6:.2f} | {build['median_s']:.3f} "
            f"({build['min_s']:.3f}-{build['max_s']:.3f}) | {render['median_s']:.3f} "
            f"({render['min_s']:.3f}-{render['max_s']:.3f}) | {total['median_s']:.3f} |"
        )
    return "\n".join(lines)


def profile_table(profile: dict[str, Any]) -> str:
    lines = [
        f"cProfile of one extra repetition ({profile['seconds']:.2f} s under the profiler):",
        "",
        "| stage | cumulative s |",
        "|---|---:|",
    ]
    lines += [f"| {stage} | {seconds:.2f} |" for stage, seconds in profile["stages_s"].items()]
    return "\n".join(lines)


def shapes_table(results: list[ExtractResult]) -> str:
    """One line per metadata shape: the extract step against its floor, and its memory."""
    lines = [
        "| metadata shape | rows | metadata B/row | floor s | ours s | ours / floor (medians) "
        "| ours / floor (median of pairs) | ours peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        loaded, ours = result.loaded, result.series["ours"]
        lines.append(
            f"| {loaded.shape} | {loaded.rows:,} | {loaded.metadata_bytes_avg:,} | "
            f"{_s(result.series['floor_exact'].median)} | {_s(ours.median)} | "
            f"{result.ratio('floor_exact'):.2f}x | {result.paired_ratio('floor_exact'):.2f}x | "
            f"{_mb(max(ours.peak_rss_mb))} |"
        )
    return "\n".join(lines)


def render(
    results: dict[str, Any],
    extracts: list[ExtractResult],
    scaling: list[ExtractResult],
    profile: dict[str, Any] | None,
) -> str:
    parts = [f"Command: `{results['command']}`", "", describe_markdown(results["machine"]), ""]
    if extracts:
        parts += ["#### Extraction by metadata shape", "", shapes_table(extracts), ""]
    for extract in extracts:
        parts += [
            f"#### Extraction of one hour, {extract.loaded.rows:,} rows, "
            f"{extract.loaded.shape} metadata, repeat {results['settings']['repeat']}",
            "",
            extract_table(extract),
            "",
            extract_summary(extract),
            "",
        ]
    if profile is not None:
        parts += [profile_table(profile), ""]
    if scaling:
        parts += ["#### Scaling (one hour per size)", "", scaling_table(scaling), ""]
    if results.get("cbf"):
        parts += ["#### CBF aggregation + body serialization", "", cbf_table(results["cbf"]), ""]
    return "\n".join(parts)
