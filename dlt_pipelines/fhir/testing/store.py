"""The test server's resource store: raw FHIR JSON kept byte for byte, stamped like a server would.

A FHIR server sets ``meta.versionId`` and ``meta.lastUpdated`` when it stores a resource. The store
does the same without re-serializing the resource: the top-level members stay ``msgspec.Raw``
slices of the original bytes, and only ``meta`` is decoded and rewritten, so a decimal written as
``0.700`` is served as ``0.700``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

DEFAULT_FIRST_UPDATE = datetime(2026, 1, 1, tzinfo=UTC)

_COMPARATORS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass(frozen=True)
class Deletion:
    resource_type: str
    id: str
    deleted_at: datetime


@dataclass(frozen=True)
class StoredResource:
    resource_type: str
    id: str
    version_id: str
    last_updated: datetime
    body: bytes


def format_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds, the form the store writes into ``meta``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_instant(text: str) -> datetime:
    """A FHIR instant, dateTime or date as an aware UTC datetime (a bare date is its midnight)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def read_ndjson(folder: Path, *, types: Iterable[str] | None = None) -> list[bytes]:
    """The lines of ``<Type>.*.ndjson`` files in ``folder``, in file and line order."""
    wanted = set(types) if types is not None else None
    lines: list[bytes] = []
    for path in sorted(folder.glob("*.ndjson")):
        resource_type = path.name.split(".", 1)[0]
        if wanted is not None and resource_type not in wanted:
            continue
        if not resource_type[:1].isupper():
            continue
        with path.open("rb") as handle:
            lines.extend(line.rstrip(b"\r\n") for line in handle if line.strip())
    return lines


class ResourceStore:
    """Resources by type, each with a version and a last-updated instant, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_type: dict[str, dict[str, StoredResource]] = {}
        self._deletions: list[Deletion] = []
        self._latest = DEFAULT_FIRST_UPDATE - timedelta(seconds=1)

    def add(self, bodies: Iterable[bytes], *, first_update: datetime | None = None) -> int:
        """Store each body as a new version, one second apart from ``first_update`` onwards.

        Without ``first_update`` the new versions follow the latest instant already stored.
        Returns how many resources were stored.
        """
        added = 0
        with self._lock:
            moment = first_update or self._latest + timedelta(seconds=1)
            for body in bodies:
                self._put(body, moment)
                self._latest = max(self._latest, moment)
                moment += timedelta(seconds=1)
                added += 1
        return added

    def _put(self, body: bytes, moment: datetime) -> None:
        members = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
        resource_type = msgspec.json.decode(members["resourceType"], type=str)
        resource_id = msgspec.json.decode(members["id"], type=str)
        by_id = self._by_type.setdefault(resource_type, {})
        previous = by_id.get(resource_id)
        version = str(int(previous.version_id) + 1) if previous else "1"

        meta = msgspec.json.decode(members["meta"], type=dict) if "meta" in members else {}
        meta["versionId"] = version
        meta["lastUpdated"] = format_instant(moment)
        stamped: dict[str, msgspec.Raw] = {}
        for name, raw in members.items():
            stamped[name] = raw
            if name == "id" and "meta" not in members:
                stamped["meta"] = msgspec.Raw(msgspec.json.encode(meta))
        if "meta" in members:
            stamped["meta"] = msgspec.Raw(msgspec.json.encode(meta))
        by_id[resource_id] = StoredResource(
            resource_type, resource_id, version, moment, msgspec.json.encode(stamped)
        )

    def delete(self, resource_type: str, resource_id: str) -> bool:
        """Remove a resource, as of one second after the latest update; False if absent."""
        with self._lock:
            if self._by_type.get(resource_type, {}).pop(resource_id, None) is None:
                return False
            self._latest += timedelta(seconds=1)
            self._deletions.append(Deletion(resource_type, resource_id, self._latest))
        return True

    def deletions(self, *, since: datetime) -> list[Deletion]:
        with self._lock:
            return [gone for gone in self._deletions if gone.deleted_at > since]

    @property
    def latest(self) -> datetime:
        """The instant of the newest update stored: the store's clock."""
        with self._lock:
            return self._latest

    def types(self) -> list[str]:
        with self._lock:
            return sorted(self._by_type)

    def count(self, resource_type: str) -> int:
        with self._lock:
            return len(self._by_type.get(resource_type, {}))

    def search(
        self, resource_type: str, *, last_updated: Iterable[str] = ()
    ) -> list[StoredResource]:
        """Resources of a type matching every ``_lastUpdated`` value, oldest update first."""
        tests = [_comparison(value) for value in last_updated]
        with self._lock:
            candidates = list(self._by_type.get(resource_type, {}).values())
        matches = [
            stored for stored in candidates
            if all(_holds(op, stored.last_updated, bound) for op, bound in tests)
        ]
        return sorted(matches, key=lambda stored: (stored.last_updated, stored.id))


def _comparison(value: str) -> tuple[str, datetime]:
    prefix = value[:2]
    if prefix in _COMPARATORS:
        return prefix, parse_instant(value[2:])
    return "eq", parse_instant(value)


def _holds(op: str, moment: datetime, bound: datetime) -> bool:
    if op == "gt":
        return moment > bound
    if op == "ge":
        return moment >= bound
    if op == "lt":
        return moment < bound
    if op == "le":
        return moment <= bound
    if op == "ne":
        return moment != bound
    return moment == bound
