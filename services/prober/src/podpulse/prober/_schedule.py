"""The prober's beat schedule, built from its settings.

Beat runs redbeat's ``RedBeatScheduler`` (podpulse.common.beat): at start-up it writes these
entries to Redis and takes the redbeat lock, so however many beat processes run, one fires.
Entries carry no sizes: each task reads them from the settings of the worker that runs it, so
changing a size is a worker restart, not a beat one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import crontab, schedule

__all__ = ["SMOKE_ENTRY", "SOAK_ENTRY", "SWEEP_ENTRY", "beat_schedule", "parse_cron"]

SMOKE_ENTRY = "podpulse.prober.smoke"
SWEEP_ENTRY = "podpulse.prober.sweep"
SOAK_ENTRY = "podpulse.prober.soak"

_CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def parse_cron(expression: str) -> crontab:
    """A five-field cron expression (``"0 3 * * *"``: 03:00 UTC daily) as a Celery crontab.

    Raises ValueError naming the expression when it has another number of fields or a field
    Celery cannot parse.
    """
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"cron expression {expression!r} must have 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    try:
        return crontab(**dict(zip(_CRON_FIELDS, fields, strict=True)))
    except ValueError as exc:
        raise ValueError(f"cron expression {expression!r}: {exc}") from exc


def beat_schedule(
    *,
    smoke_every_s: float | None,
    sweep_cron: str | None,
    smoke_first_after_s: float | None = None,
    soak_cron: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Celery ``beat_schedule`` entries: a smoke run every *smoke_every_s*, a sweep and a soak
    on cron (a nightly soak is what auto-release, TAGGER_RELEASE_AUTO, releases on).

    A falsy value leaves that entry out. The smoke message expires after one period: when the
    prober workers are busy (a soak holds them for an hour) stale smokes are dropped instead of
    running back to back once the soak ends. *smoke_first_after_s* brings the first smoke
    forward to that many seconds after *now* (default: the current time): the entry says it
    last ran one period minus that ago. redbeat keeps an entry's last run in Redis, so this
    only decides the first smoke of a schedule Redis does not hold yet.
    """
    entries: dict[str, Any] = {}
    if smoke_every_s:
        if smoke_every_s < 0:
            raise ValueError(f"smoke interval must be positive, got {smoke_every_s}")
        entries[SMOKE_ENTRY] = {
            "task": "podpulse.prober.smoke",
            "schedule": schedule(run_every=timedelta(seconds=smoke_every_s)),
            "options": {"expires": float(smoke_every_s)},
        }
        if smoke_first_after_s is not None and smoke_first_after_s < smoke_every_s:
            start = now or datetime.now(UTC)
            ran = start - timedelta(seconds=smoke_every_s - smoke_first_after_s)
            entries[SMOKE_ENTRY]["last_run_at"] = ran
    if sweep_cron:
        entries[SWEEP_ENTRY] = {"task": "podpulse.prober.sweep", "schedule": parse_cron(sweep_cron)}
    if soak_cron:
        entries[SOAK_ENTRY] = {"task": "podpulse.prober.soak", "schedule": parse_cron(soak_cron)}
    return entries
