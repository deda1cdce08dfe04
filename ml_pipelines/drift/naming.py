"""Drift in clinical words: "COVID-19 in 0% of encounters, now 12%", "median age up 6 years"."""

from __future__ import annotations


def percent(share: float) -> str:
    """A share as a percentage: one decimal below 10%, none above; never "-0"."""
    value = share * 100
    text = f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text in {"-0", "0.0"} else text


def number(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def describe_flag(
    label: str,
    *,
    unit_noun: str,
    reference_share: float,
    current_share: float,
    interval: tuple[float, float],
) -> str:
    low, high = interval
    return (
        f"{label} in {percent(reference_share)}% of {unit_noun}, now {percent(current_share)}% "
        f"(difference {_signed_points(current_share - reference_share)} points, "
        f"95% CI {_signed_points(low)} to {_signed_points(high)})"
    )


def describe_numeric(
    label: str, *, unit: str, reference_median: float, current_median: float
) -> str:
    change = current_median - reference_median
    suffix = f" {unit}" if unit else ""
    if change == 0:
        return f"median {label} unchanged at {number(reference_median)}{suffix}"
    direction = "up" if change > 0 else "down"
    amount = number(abs(change))
    unit_there = suffix[:-1] if amount == "1" and suffix.endswith("s") else suffix
    return (
        f"median {label} {direction} {amount}{unit_there} "
        f"(from {number(reference_median)} to {number(current_median)})"
    )


def describe_category(
    label: str,
    *,
    category: str,
    unit_noun: str,
    reference_share: float,
    current_share: float,
) -> str:
    return (
        f"{label} {category} in {percent(reference_share)}% of {unit_noun}, "
        f"now {percent(current_share)}%"
    )


def describe_appeared(
    label: str, *, unit_noun: str, reference_total: int, current_hits: int, current_total: int
) -> str:
    return (
        f"{label} appeared: in none of {reference_total} {unit_noun} before, now in "
        f"{current_hits} of {current_total} ({percent(current_hits / current_total)}%)"
    )


def describe_disappeared(
    label: str, *, unit_noun: str, reference_hits: int, reference_total: int, current_total: int
) -> str:
    return (
        f"{label} disappeared: in {reference_hits} of {reference_total} {unit_noun} "
        f"({percent(reference_hits / reference_total)}%) before, now in none of {current_total}"
    )


def _signed_points(share: float) -> str:
    value = share * 100
    text = f"{value:+.1f}"
    return "0" if text in {"+0.0", "-0.0"} else text
