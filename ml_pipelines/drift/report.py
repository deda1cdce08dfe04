"""The drift report: a JSON document and a self-contained HTML page with inline SVG plots.

The page needs nothing but a browser: styles and charts are inline, no script, no network. It
shows what drifted in clinical words, the measured values beside the thresholds, reference and
current distributions, and each drifted feature across all windows.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

import numpy as np

from ml_pipelines.drift import svg
from ml_pipelines.drift.compare import Comparison
from ml_pipelines.drift.features import FeatureSet
from ml_pipelines.drift.windows import WINDOW_COLUMN

REPORT_ROOT = "reports/drift"
MAX_PLOTS = 16
MAX_TREND_LINES = 6
MAX_LISTED = 15
METHOD_NOTE = (
    "Decisions use exact tests on the data, not whylogs' sketch-based p-values: a two-sample "
    "Kolmogorov-Smirnov test on raw values for numeric features, and Fisher's exact test or a "
    "chi-square test of homogeneity (both windows varying, rare categories pooled) for "
    "categories and flags. whylogs' KS, chi-square and Hellinger on the stored profiles are "
    "listed beside them for reference."
)


def trend(features: FeatureSet, columns: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Per window: the prevalence of each flag, the median of each numeric feature."""
    grouped = features.frame.groupby(WINDOW_COLUMN, sort=True)
    series: dict[str, list[tuple[str, float]]] = {}
    for column in columns:
        kind = features.kind(column)
        if kind == "flag":
            values = grouped[column].mean()
        elif kind == "numeric":
            values = grouped[column].median()
        else:
            continue
        series[column] = [
            (str(window), float(value)) for window, value in values.items() if np.isfinite(value)
        ]
    return series


def build_report(
    comparison: Comparison,
    *,
    run_id: str,
    features: FeatureSet | None = None,
    whylogs: dict[str, dict[str, float | None]] | None = None,
    false_alarms: dict[str, Any] | None = None,
    model_drift: list[dict[str, Any]] | None = None,
    gate: dict[str, Any] | None = None,
    profiles: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The report as one JSON-ready dict."""
    document = comparison.as_json()
    whylogs = whylogs or {}
    for item in document["features"]:
        item.update(whylogs.get(item["feature"], {}))
    document.update(
        {
            "run_id": run_id,
            "method": METHOD_NOTE,
            "false_alarms": false_alarms,
            "model_drift": model_drift or [],
            "gate": gate,
            "profiles": profiles or {},
            "trend": {},
        }
    )
    if features is not None and WINDOW_COLUMN in features.frame.columns:
        drifted = [item.feature for item in comparison.drifted]
        numeric = [column for column in features.numeric if column not in drifted]
        columns = (drifted + numeric)[:MAX_TREND_LINES]
        document["trend"] = {
            "labels": {column: features.label(column) for column in columns},
            "kinds": {column: features.kind(column) for column in columns},
            "series": trend(features, columns),
        }
    return document


def to_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def render_html(document: dict[str, Any]) -> str:
    """The report as one HTML page with inline styles and SVG charts."""
    config = document["config"]
    drifted = [item for item in document["features"] if item["drifted"]]
    drifted.sort(key=lambda item: -item["effect_h"])
    title = (
        f"carelake drift: {document['feature_set']} {document['current']} against "
        f"{document['reference']}"
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='verdict {'drift' if document['has_drift'] else 'quiet'}'>",
        f"{'Drift found' if document['has_drift'] else 'No drift found'}: {len(drifted)} of "
        f"{len(document['features'])} tested features drifted "
        f"({document['current_units']} {escape(document['unit_noun'])} now, "
        f"{document['reference_units']} in the reference).</p>",
        "<p class='thresholds'>Thresholds: adjusted p-value at most "
        f"{config['alpha']} ({escape(config['correction'])} correction) and effect size "
        f"(effect_h, Cohen's h scale) at least {config['min_effect_size']}. Run "
        f"{escape(document['run_id'])}.</p>",
    ]
    if drifted:
        parts.append("<h2>What changed</h2><ul class='named'>")
        parts.extend(f"<li>{escape(item['description'])}</li>" for item in drifted)
        parts.append("</ul>")
    parts.append(_listing("Appeared since the reference", document["appeared"]))
    parts.append(_listing("Gone since the reference", document["disappeared"]))
    parts.append(_trend_section(document))
    parts.append(_distribution_section(document, drifted))
    parts.append(_false_alarm_section(document))
    parts.append(_model_section(document))
    parts.append(_table(document))
    parts.append(f"<p class='method'>{escape(document['method'])}</p></body></html>")
    return "".join(parts)


def _listing(heading: str, lines: list[str]) -> str:
    if not lines:
        return ""
    parts = [f"<h2>{escape(heading)}</h2><ul>"]
    parts.extend(f"<li>{escape(line)}</li>" for line in lines[:MAX_LISTED])
    if len(lines) > MAX_LISTED:
        parts.append(f"<li>and {len(lines) - MAX_LISTED} more (in the JSON report)</li>")
    parts.append("</ul>")
    return "".join(parts)


def _trend_section(document: dict[str, Any]) -> str:
    trend_data = document.get("trend") or {}
    series = trend_data.get("series") or {}
    if not series:
        return ""
    labels, kinds = trend_data["labels"], trend_data["kinds"]
    parts = ["<h2>Across windows</h2>"]
    flags = {labels[c]: points for c, points in series.items() if kinds[c] == "flag"}
    numeric = {labels[c]: points for c, points in series.items() if kinds[c] == "numeric"}
    if flags:
        parts.append(svg.line_chart(flags, title="prevalence per window", percent=True))
    if numeric:
        parts.append(svg.line_chart(numeric, title="median per window", percent=False))
    return "".join(parts)


def _distribution_section(document: dict[str, Any], drifted: list[dict[str, Any]]) -> str:
    shown = drifted + [
        item for item in document["features"] if item["kind"] != "flag" and not item["drifted"]
    ]
    if not shown:
        return ""
    parts = ["<h2>Reference and current distributions</h2><div class='charts'>"]
    for item in shown[:MAX_PLOTS]:
        parts.append(f"<figure>{svg.bar_chart(item['bins'], title=item['label'])}")
        parts.append(f"<figcaption>{escape(item['description'])}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)


def _false_alarm_section(document: dict[str, Any]) -> str:
    alarms = document.get("false_alarms")
    if not alarms:
        return ""
    return (
        "<h2>False alarms</h2><p>Random halves of the reference window, split "
        f"{alarms['splits']} times: {alarms['alarms']} reported drift (rate {alarms['rate']:.3f}, "
        f"configured level {alarms['level']}).</p>"
    )


def _model_section(document: dict[str, Any]) -> str:
    rows = document.get("model_drift") or []
    if not rows:
        return ""
    parts = ["<h2>Model drift</h2><table><tr><th>model</th><th>metric</th><th>reference</th>"]
    parts.append("<th>current</th><th>drop</th><th>threshold</th><th>drift</th></tr>")
    for row in rows:
        parts.append(
            f"<tr><td>{escape(row['model'])}</td><td>{escape(row['metric'])}</td>"
            f"<td>{row['reference']:.3f}</td><td>{row['current']:.3f}</td>"
            f"<td>{row['drop']:.3f}</td><td>{row['threshold']:.3f}</td>"
            f"<td>{'yes' if row['drifted'] else 'no'}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def _table(document: dict[str, Any]) -> str:
    parts = [
        "<h2>Every tested feature</h2><table><tr><th>feature</th><th>test</th><th>p</th>",
        "<th>adjusted p</th><th>effect_h</th><th>Hellinger</th><th>PSI</th>",
        "<th>whylogs p</th><th>drift</th></tr>",
    ]
    rows = sorted(document["features"], key=lambda item: (not item["drifted"], -item["effect_h"]))
    for item in rows:
        sketch = item.get("whylogs_ks_p_value", item.get("whylogs_chi-square_p_value"))
        parts.append(
            f"<tr class='{'drift' if item['drifted'] else ''}'><td>{escape(item['label'])}</td>"
            f"<td>{escape(item['test'])}</td><td>{item['p_value']:.2g}</td>"
            f"<td>{item['adjusted_p']:.2g}</td><td>{item['effect_h']:.3f}</td>"
            f"<td>{item['hellinger']:.3f}</td><td>{item['psi']:.3f}</td>"
            f"<td>{'' if sketch is None else f'{sketch:.2g}'}</td>"
            f"<td>{'yes' if item['drifted'] else 'no'}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
.verdict{font-size:15px;padding:8px;border-radius:4px}
.verdict.drift{background:#fde2e1} .verdict.quiet{background:#e3f4e1}
.thresholds,.method{color:#555;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:8px} figure{margin:0;width:460px}
figcaption{font-size:11px;color:#444}
table{border-collapse:collapse;font-size:11px} td,th{border:1px solid #ccc;padding:2px 6px}
tr.drift td{background:#fff1e6}
"""
