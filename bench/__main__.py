"""``python -m bench run``: load a synthetic LiteLLM hour, time extraction against its floor.

See bench/README.md ("Extraction (issue 2)") for what is measured and the latest numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.database import DEFAULT_DATABASE_URL, SHAPES, ensure_database, load_hour
from bench.extract import (
    DEFAULT_PROTOTYPES,
    PROTOTYPES,
    SCALING_PROTOTYPES,
    ExtractResult,
    measure_extract,
    temporary_lake,
)
from bench.machine import describe
from bench.report import render

RESULTS = Path(__file__).resolve().parent / "results"


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("give positive row counts, e.g. 10000,100000")
    return sizes


def _shapes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SHAPES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose shapes from {', '.join(SHAPES)}")
    return names


def _padding(shape: str, padding_bytes: int) -> int:
    """The model_map shape is full-size as LiteLLM writes it; only the padded shape is padded."""
    return padding_bytes if shape == "padded" else 0


def _prototypes(text: str) -> list[str]:
    if text in ("", "none"):
        return []
    names = list(PROTOTYPES) if text == "all" else [n.strip() for n in text.split(",")]
    unknown = sorted(set(names) - set(PROTOTYPES))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown prototypes {unknown}; choose from {', '.join(PROTOTYPES)}, all or none"
        )
    return names


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="load (once) and measure")
    run.add_argument("--rows-per-hour", type=int, default=200_000)
    run.add_argument("--repeat", type=int, default=3)
    run.add_argument(
        "--padding-bytes", type=int, default=7000, help="metadata padding per row (padded shape)"
    )
    run.add_argument(
        "--shapes",
        type=_shapes,
        default=list(SHAPES),
        help=f"metadata shapes to measure extraction on, comma list of {', '.join(SHAPES)}",
    )
    run.add_argument(
        "--database",
        default=None,
        help=f"benchmark database URL (default: create/reuse {DEFAULT_DATABASE_URL})",
    )
    run.add_argument("--only", choices=("extract", "cbf", "all"), default="all")
    run.add_argument("--scaling", type=_sizes, help="also measure extraction at these sizes")
    run.add_argument(
        "--prototypes",
        type=_prototypes,
        default=list(DEFAULT_PROTOTYPES),
        help=f"comma list of {', '.join(PROTOTYPES)}, 'all' or 'none' "
        f"(default: {','.join(DEFAULT_PROTOTYPES)})",
    )
    run.add_argument("--profile", action="store_true", help="cProfile one extra repetition")
    run.add_argument(
        "--peers",
        action="store_true",
        help="with cbf: also run bench/peers.py (LiteLLM's and ll2cz's CBF transformers)",
    )
    run.add_argument(
        "--pipeline",
        action="store_true",
        help="also run whole jobs (bench/pipeline.py): a daily run and a 30-day backfill",
    )
    run.add_argument(
        "--day",
        action="store_true",
        help="also run bench/day.py: a realistic daily run against its hours' floors",
    )
    run.add_argument("--day-rows-per-hour", type=int, default=20_000)
    run.add_argument("--daily-rows-per-hour", type=int, default=5000)
    run.add_argument("--backfill-rows-per-hour", type=int, default=200)
    run.add_argument("--out", type=Path, help="results JSON (default bench/results/<UTC>.json)")
    report = commands.add_parser("report", help="print the Markdown of a saved results JSON")
    report.add_argument("results", type=Path)
    return main


def markdown_of(
    results: dict[str, Any],
    extracts: list[ExtractResult],
    scaling: list[ExtractResult],
    profile: dict[str, Any] | None,
) -> str:
    markdown = render(results, extracts, scaling, profile)
    if "peers" in results:
        from bench import peers

        markdown += "\n#### CBF: ours vs the peers (bench/peers.py)\n\n"
        markdown += peers.render_markdown(results["peers"])
    if "pipeline" in results:
        from bench import pipeline

        markdown += "\n#### Whole runs: a day and a 30-day backfill (bench/pipeline.py)\n\n"
        markdown += pipeline.table(results["pipeline"]) + "\n"
    if "day" in results:
        from bench import day

        markdown += "\n#### A realistic daily run against its floors (bench/day.py)\n\n"
        markdown += day.table(results["day"]) + "\n"
    return markdown


def report(path: Path) -> int:
    results = json.loads(path.read_text())
    extracts = [ExtractResult.from_json(item) for item in results.get("extracts", [])]
    scaling = [ExtractResult.from_json(item) for item in results.get("scaling", [])]
    print(markdown_of(results, extracts, scaling, results.get("profile")))
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "report":
        return report(args.results)
    if shutil.which("psql") is None:
        log("psql is not on PATH: the floor is measured with psql")
        return 2
    started = datetime.now(UTC)
    url = args.database or DEFAULT_DATABASE_URL
    if args.database is None:
        ensure_database(url)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = args.out or RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    results: dict[str, Any] = {
        "command": command,
        "started_at": started.isoformat(),
        "machine": describe(url),
        "settings": {
            "rows_per_hour": args.rows_per_hour,
            "repeat": args.repeat,
            "padding_bytes": args.padding_bytes,
            "shapes": args.shapes,
            "database": "default cz_bench" if args.database is None else "given",
            "only": args.only,
            "scaling": args.scaling,
            "prototypes": args.prototypes,
        },
    }
    extracts: list[ExtractResult] = []
    scaling: list[ExtractResult] = []
    profile: dict[str, Any] | None = None
    kept_lake = temporary_lake()
    try:
        if args.only in ("extract", "all"):
            for shape in args.shapes:
                loaded = load_hour(
                    url,
                    args.rows_per_hour,
                    _padding(shape, args.padding_bytes),
                    log=log,
                    shape=shape,
                )
                log(f"measuring extraction of {loaded.rows:,} {shape} rows, repeat {args.repeat}")
                keep = kept_lake if not extracts else None
                extracts.append(
                    measure_extract(
                        url, loaded, args.repeat, args.prototypes, keep_lake=keep, log=log
                    )
                )
            results["extracts"] = [extract.as_json() for extract in extracts]
            if args.profile:
                from bench.profiling import profile_extract

                log("profiling one more repetition")
                profile = profile_extract(url, extracts[0].loaded)
                results["profile"] = profile
            for size in args.scaling or []:
                sized = load_hour(
                    url,
                    size,
                    _padding(args.shapes[0], args.padding_bytes),
                    log=log,
                    shape=args.shapes[0],
                )
                log(f"scaling: measuring {size:,} rows, repeat {args.repeat}")
                scaling.append(
                    measure_extract(
                        url,
                        sized,
                        args.repeat,
                        [name for name in args.prototypes if name in SCALING_PROTOTYPES],
                        with_scalar=False,
                        log=log,
                    )
                )
            results["scaling"] = [result.as_json() for result in scaling]
        if args.only in ("cbf", "all"):
            from bench.cbf import measure_bench_cbf, measure_lake_hour

            log(f"CBF: bench_cbf.run({args.rows_per_hour:,}) x {args.repeat}")
            results["cbf"] = [measure_bench_cbf(args.rows_per_hour, args.repeat)]
            if extracts:
                results["cbf"].append(
                    measure_lake_hour(kept_lake, extracts[0].loaded.hour, args.repeat)
                )
            if args.peers:
                from bench import peers

                results["peers"] = peers.run(args.rows_per_hour, repeat=args.repeat, log=log)
        if args.day:
            from bench import day

            log(f"a daily run: 24 hours of {args.day_rows_per_hour:,} rows with ~10 KB metadata")
            results["day"] = [day.run(args.day_rows_per_hour, args.shapes[0], args.padding_bytes)]
        if args.pipeline:
            from bench import pipeline

            log("whole runs: a daily run and a 30-day backfill")
            results["pipeline"] = pipeline.run(
                24, args.daily_rows_per_hour, ["sqlite", "postgres-batched"]
            ) + pipeline.run(
                720, args.backfill_rows_per_hour, ["sqlite", "postgres", "postgres-batched"]
            )
    finally:
        shutil.rmtree(kept_lake, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).isoformat()
    markdown = markdown_of(results, extracts, scaling, profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    log(f"results: {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
