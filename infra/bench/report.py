"""How each cost grows with size, and the markdown table the benchmark writes into docs/.

Growth is the slope of log(cost) against log(input bytes) over the scales where a measurement
succeeded, by least squares: about 1.0 is linear, clearly above 1 is worse than linear, and below
1 means fixed costs (start-up, imports, catalog commits) still dominate at these sizes. The slope
between the two largest scales alone is given too: it is the closer to how the cost grows beyond.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

BEGIN = "<!-- benchmark:begin (written by python -m infra.bench) -->"
END = "<!-- benchmark:end -->"
LINEAR_UP_TO = 1.15
FIXED_COSTS_BELOW = 0.85


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two distinct sizes."""
    usable = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len({x for x, _ in usable}) < 2:
        return None
    mean_x = sum(x for x, _ in usable) / len(usable)
    mean_y = sum(y for _, y in usable) / len(usable)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in usable)
    denominator = sum((x - mean_x) ** 2 for x, _ in usable)
    return numerator / denominator


def verdict(exponent: float | None) -> str:
    if exponent is None:
        return "needs two or more scales"
    if exponent > LINEAR_UP_TO:
        return "worse than linear"
    if exponent < FIXED_COSTS_BELOW:
        return "sublinear (fixed costs dominate)"
    return "linear"


def growth(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names: list[str] = []
    for run in runs:
        names.extend(name for name in run["results"] if name not in names)
    table = {}
    for name in names:
        times, memory = [], []
        for run in runs:
            result = run["results"].get(name, {})
            if result.get("status") == "ok" and run["input"]:
                times.append((run["input"]["bytes"], result["seconds"]))
                memory.append((run["input"]["bytes"], result["peak_rss_mb"]))
        exponent = slope(times)
        largest = slope(sorted(times)[-2:])
        table[name] = {
            "scales": len(times),
            "time_exponent": _rounded(exponent),
            "time_exponent_largest": _rounded(largest),
            "memory_exponent": _rounded(slope(memory)),
            "memory_exponent_largest": _rounded(slope(sorted(memory)[-2:])),
            "verdict": verdict(largest),
        }
    return table


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2) + 0.0  # + 0.0: no "-0.0"


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {results['started_at']} on {machine['cpus']} CPU cores, "
        f"{machine['memory_gb']} GB, Python {machine['python']}, {machine['system']}; "
        f"scales {', '.join(f'{factor}x' for factor in results['scales'])}, "
        f"seed {results['seed']}.",
        "",
    ]
    for run in results["runs"]:
        size = run["input"]
        if size:
            lines.append(f"**{run['factor']}x**: {size['bytes'] / 1e6:,.1f} MB of FHIR JSON, "
                         f"{size['resources']:,} resources, {size['images']:,} images.")
        else:
            lines.append(f"**{run['factor']}x**: the scaled input could not be made.")
        lines += [
            "",
            "| measurement | status | seconds | MB/s | resources/s | items/s | peak RSS (MB) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, result in run["results"].items():
            status = result["status"]
            if status != "ok":
                reason = result.get("reason", "").replace("|", "/")
                lines.append(f"| {name} | {status}: {reason} | | | | | |")
                continue
            items = result.get("items_per_s")
            unit = result.get("unit", "")
            item_text = f"{_number(items)} {unit}" if items is not None and name not in {
                "scale", "orjson_parse", "naive_dlt", "ingest"} else ""
            lines.append(
                f"| {name} | ok | {_number(result['seconds'], 2)} | "
                f"{_number(result.get('mb_per_s'), 2)} | "
                f"{_number(result.get('resources_per_s'))} | "
                f"{item_text} | {_number(result['peak_rss_mb'])} |"
            )
        lines.append("")
    lines += [
        "Growth: the log-log slope of seconds and of peak RSS against input size, over all",
        "scales and between the two largest; the verdict reads the latter.",
        "",
        "| measurement | time, all | time, two largest | memory, all | memory, two largest "
        "| growth |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in results["growth"].items():
        lines.append(
            f"| {name} | {_number(row['time_exponent'], 2)} | "
            f"{_number(row['time_exponent_largest'], 2)} | {_number(row['memory_exponent'], 2)} | "
            f"{_number(row['memory_exponent_largest'], 2)} | {row['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    """Put the table between the benchmark markers of ``path``, keeping the rest of the file."""
    block = f"{BEGIN}\n{markdown(results)}{END}"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
