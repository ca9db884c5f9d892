"""Detect, pure part: Alertmanager webhook payloads (version 4) parsed into alerts, and the set of alerts active now."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

NODE_DOWN = "NodeDown"
SITE_UNREACHABLE = "SiteUnreachable"
TUNNEL_DOWN = "TunnelDown"
"""Alert names from ``resinfra.render.prometheus.alert_rules``: the ones the policy reads."""
FIRING = "firing"
RESOLVED = "resolved"
WEBHOOK_VERSION = "4"
"""Alertmanager's webhook payload version (stable since Alertmanager 0.7)."""

_RFC3339 = re.compile(r"^(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:\d\d)$")


class PayloadError(ValueError):
    """A webhook body that is not an Alertmanager version 4 payload."""


def parse_time(text: str) -> float:
    """An RFC 3339 time (Alertmanager writes nanoseconds) as a POSIX timestamp.

    Example: ``parse_time("2026-11-26T07:22:06.123456789Z")``.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise PayloadError(f"{text!r} is not an RFC 3339 time")
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    tz = "+00:00" if match["tz"] == "Z" else match["tz"]
    try:
        return dt.datetime.fromisoformat(f"{match['base']}.{frac}{tz}").timestamp()
    except (ValueError, OverflowError) as err:  # month 13, year 0, hour 25: shaped like a time, not one
        raise PayloadError(f"{text!r} is not a valid time: {err}") from None


def format_time(timestamp: float) -> str:
    """A POSIX timestamp as RFC 3339 UTC with seconds: ``2026-11-26T07:22:06Z``."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Alert:
    """One alert of a payload."""

    name: str
    status: str
    labels: Mapping[str, str]
    starts_at: float
    fingerprint: str
    noticed: float | None = None
    """When the healer first heard of this episode (set by :class:`AlertBook`); None when unknown."""

    def label(self, key: str) -> str | None:
        return self.labels.get(key)


def _alert(raw: Any, index: int) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} is not an object")
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise PayloadError(f"{where}.labels is not a map of strings")
    if not isinstance(labels.get("alertname"), str):
        raise PayloadError(f"{where}.labels has no alertname")
    status = raw.get("status")
    if status not in (FIRING, RESOLVED):
        raise PayloadError(f"{where}.status is {status!r}, not firing or resolved")
    starts = raw.get("startsAt")
    if not isinstance(starts, str):
        raise PayloadError(f"{where}.startsAt is missing")
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise PayloadError(f"{where}.fingerprint is missing")
    return Alert(labels["alertname"], status, dict(labels), parse_time(starts), fingerprint)


def parse_payload(body: Any) -> list[Alert]:
    """The alerts of an Alertmanager webhook body (already decoded from JSON).

    Raises :class:`PayloadError` for anything that is not a version 4 payload.
    """
    if not isinstance(body, dict):
        raise PayloadError("the body is not a JSON object")
    if body.get("version") != WEBHOOK_VERSION:
        raise PayloadError(f"version is {body.get('version')!r}, expected {WEBHOOK_VERSION!r} (Alertmanager's webhook format)")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts is not a list")
    return [_alert(raw, i) for i, raw in enumerate(alerts)]


@dataclass
class AlertBook:
    """The alerts firing now, as the webhooks told them.

    A resolved alert leaves at once. A firing one that Alertmanager stops repeating
    (it re-sends every ``healer_repeat_interval``) is dropped after ``ttl`` seconds, so a
    lost "resolved" never keeps the healer acting on a stale alert.
    """

    ttl: float
    _firing: dict[str, tuple[Alert, float]] = field(default_factory=dict)

    def apply(self, alerts: Iterable[Alert], received: float) -> list[Alert]:
        """Record a payload's alerts; returns what changed: firing alerts not active before (with ``noticed`` set) and every resolved one.

        Alertmanager repeats a firing alert every ``repeat_interval``: a repeat changes nothing.
        """
        changed = []
        for alert in alerts:
            if alert.status == RESOLVED:
                self._firing.pop(alert.fingerprint, None)
                changed.append(alert)
                continue
            previous = self._firing.get(alert.fingerprint)
            if previous is None or previous[0].starts_at != alert.starts_at:
                alert = replace(alert, noticed=received)
                changed.append(alert)
            else:
                alert = replace(alert, noticed=previous[0].noticed)
            self._firing[alert.fingerprint] = (alert, received)
        return changed

    def __len__(self) -> int:
        return len(self._firing)

    def __contains__(self, fingerprint: str) -> bool:
        return fingerprint in self._firing

    def active(self, now: float) -> list[Alert]:
        """Firing alerts heard from within the last ``ttl`` seconds, oldest first."""
        for fingerprint in [f for f, (_, seen) in self._firing.items() if seen + self.ttl < now]:
            del self._firing[fingerprint]
        return sorted((a for a, _ in self._firing.values()), key=lambda a: (a.starts_at, a.fingerprint))
