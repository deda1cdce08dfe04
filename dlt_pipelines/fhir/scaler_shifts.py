"""Shifts that change scaled copies on purpose, so drift detection has something to find.

``{"age_years": N}`` moves every birth date N years earlier. ``{"new_condition": {"system",
"code", "display", "rate"}}`` adds that Condition, on the patient's latest encounter, to exactly
floor(n x rate + phase) of the n patients with an encounter in each copy (the phase is drawn per
copy), spread evenly over the order in which they appear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dlt_pipelines.fhir.scaler_rewrite import CopyRewriter, years_earlier
from infra.errors import ConfigError

SHIFT_NAMES = ("age_years", "new_condition")
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"


@dataclass(frozen=True)
class NewCondition:
    """A Condition added on an existing encounter of ``rate`` of the patients that have one."""

    system: str
    code: str
    display: str
    rate: float


@dataclass(frozen=True)
class Shifts:
    age_years: int = 0
    new_condition: NewCondition | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> Shifts:
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(SHIFT_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown shift {unknown[0]!r}: the scaler knows {list(SHIFT_NAMES)}"
            )
        age_years = raw.get("age_years", 0)
        if not isinstance(age_years, int) or isinstance(age_years, bool) or age_years < 0:
            raise ConfigError(
                f"shift age_years must be a whole number of years >= 0, not {age_years!r}"
            )
        condition = raw.get("new_condition")
        if condition is None:
            return cls(age_years=age_years)
        needed = {"system", "code", "display", "rate"}
        if not isinstance(condition, dict) or not needed <= set(condition):
            raise ConfigError(
                "shift new_condition needs system, code, display and rate (a fraction)"
            )
        rate = condition["rate"]
        if not isinstance(rate, int | float) or not 0 < float(rate) <= 1:
            raise ConfigError(f"shift new_condition.rate must be in (0, 1], not {rate!r}")
        new = NewCondition(
            system=str(condition["system"]), code=str(condition["code"]),
            display=str(condition["display"]), rate=float(rate),
        )
        return cls(age_years=age_years, new_condition=new)


class Systematic:
    """Picks exactly floor(n * rate + phase) of n patients, spread evenly over the stream."""

    def __init__(self, rate: float, phase: float) -> None:
        self.rate, self.phase, self.seen = rate, phase, 0

    def pick(self) -> bool:
        before = math.floor(self.seen * self.rate + self.phase)
        self.seen += 1
        return math.floor(self.seen * self.rate + self.phase) > before


def new_condition(
    rewriter: CopyRewriter, spec: NewCondition, *, patient: str, subject: str, encounter: str,
    start: str | None,
) -> dict[str, Any]:
    """The added Condition, on ``encounter``, with its onset at the encounter's start."""
    terminology = _TERMINOLOGY
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rewriter.new_id(f"new-condition:{patient}"),
        "clinicalStatus": {
            "coding": [{"system": f"{terminology}/condition-clinical", "code": "active"}]
        },
        "verificationStatus": {
            "coding": [{"system": f"{terminology}/condition-ver-status", "code": "confirmed"}]
        },
        "category": [{"coding": [{
            "system": f"{terminology}/condition-category", "code": "encounter-diagnosis",
            "display": "Encounter Diagnosis",
        }]}],
        "code": {
            "coding": [{"system": spec.system, "code": spec.code, "display": spec.display}],
            "text": spec.display,
        },
        "subject": {"reference": subject},
        "encounter": {"reference": encounter},
    }
    if start:
        condition["onsetDateTime"] = start
        condition["recordedDate"] = start
    return condition


def condition_entry(
    rewriter: CopyRewriter, spec: NewCondition, patient: str,
    encounters: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """A bundle entry adding the Condition to the patient's latest encounter in the bundle."""
    latest = max(encounters[patient], key=lambda entry: encounter_start(entry["resource"]))
    resource = latest["resource"]
    encounter_url = latest.get("fullUrl") or f"Encounter/{resource['id']}"
    fallback = f"Patient/{rewriter.new_id(patient)}"
    subject = (resource.get("subject") or {}).get("reference") or fallback
    condition = new_condition(
        rewriter, spec, patient=patient, subject=subject, encounter=encounter_url,
        start=encounter_start(resource) or None,
    )
    entry: dict[str, Any] = {"fullUrl": f"urn:uuid:{condition['id']}", "resource": condition}
    if "request" in latest:
        entry["request"] = {"method": "POST", "url": "Condition"}
    return entry


def encounter_start(encounter: dict[str, Any]) -> str:
    period = encounter.get("period")
    start = period.get("start") if isinstance(period, dict) else None
    return start if isinstance(start, str) else ""


def make_older(resource: dict[str, Any], shifts: Shifts) -> None:
    """The ``age_years`` shift: a Patient's birth date that many years earlier."""
    if shifts.age_years and resource.get("resourceType") == "Patient":
        birth_date = resource.get("birthDate")
        if isinstance(birth_date, str):
            resource["birthDate"] = years_earlier(birth_date, shifts.age_years)


def pick_encounter(
    picks: dict[str, tuple[str, str, str] | None], selector: Systematic, patient: str,
    encounter: dict[str, Any],
) -> None:
    """Streaming NDJSON: decide each patient at their first encounter, keep their latest one."""
    if patient not in picks:
        picks[patient] = ("", "", "") if selector.pick() else None
    current = picks[patient]
    if current is None:
        return
    start = encounter_start(encounter)
    if not current[2] or start > current[0]:
        subject = (encounter.get("subject") or {}).get("reference") or ""
        picks[patient] = (start, subject, f"Encounter/{encounter['id']}")
