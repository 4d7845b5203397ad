"""The planner's thresholds, its planning point, and the hours nudges may go out.

All thresholds live in one JSON Variable, ``leadflow_followup_rules``; keys left out keep their
defaults, unknown keys are refused (a typo must not silently fall back to a default)::

    {"site_visit_reminder": {"minutes_before": 15, "plan_ahead_minutes": 5},
     "cost_sheet_followup": {"min_quiet_hours": 2, "max_quiet_days": 7},
     "inquiry_followup": {"ranking": "High", "quiet_hours": 48, "repeat_days": 7},
     "nudge_hours_ist": {"start": "09:00", "end": "21:00"}}

**Planning point.** A run plans as of its data interval's end (the 14:40 run: 14:40), not the
wall clock, so a backfilled or re-run interval plans what it would have planned on time. The
wall clock still decides what can no longer be helped (a visit that is already over) and the
SQS delay (seconds from *now* until the reminder is due).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from leadflow.config import REPORT_TIMEZONE

IST = ZoneInfo(REPORT_TIMEZONE)
VAR_FOLLOWUP_RULES = "leadflow_followup_rules"
# What SQS accepts for DelaySeconds; a reminder due later than this is planned by a later run.
MAX_SQS_DELAY_SECONDS = 900


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReminderRule(_Strict):
    minutes_before: int = Field(default=15, ge=0, le=24 * 60)
    # How far past its planning point a run plans reminders: one schedule period, so the 14:40 run
    # plans everything due up to 14:45 and each lands on time through DelaySeconds. At most 15 min,
    # since SQS cannot delay a message longer.
    plan_ahead_minutes: int = Field(default=5, ge=1, le=MAX_SQS_DELAY_SECONDS // 60)


class CostSheetRule(_Strict):
    min_quiet_hours: float = Field(default=2, gt=0)
    max_quiet_days: float = Field(default=7, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> CostSheetRule:
        if self.max_quiet_days * 24 <= self.min_quiet_hours:
            raise ValueError("max_quiet_days must be longer than min_quiet_hours")
        return self


class HotLeadRule(_Strict):
    ranking: str = Field(default="High", min_length=1)
    quiet_hours: float = Field(default=48, gt=0)
    repeat_days: float = Field(default=7, gt=0)


class NudgeHours(_Strict):
    start: time = time(9, 0)
    end: time = time(21, 0)

    @model_validator(mode="after")
    def _ordered(self) -> NudgeHours:
        if self.end <= self.start:
            raise ValueError("end must be after start (same IST day)")
        return self

    def contains(self, when: datetime) -> bool:
        """Whether ``when`` (any zone) falls in [start, end) IST."""
        local = when.astimezone(IST).time()
        return self.start <= local < self.end


class Rules(_Strict):
    site_visit_reminder: ReminderRule = ReminderRule()
    cost_sheet_followup: CostSheetRule = CostSheetRule()
    inquiry_followup: HotLeadRule = HotLeadRule()
    nudge_hours_ist: NudgeHours = NudgeHours()

    @classmethod
    def parse(cls, raw: str | dict[str, Any] | None) -> Rules:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return cls()
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
            return cls.model_validate(data)
        except (json.JSONDecodeError, ValidationError) as error:
            raise ValueError(f"Variable {VAR_FOLLOWUP_RULES} is not valid: {error}") from None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_rules() -> Rules:
    from airflow.sdk import Variable

    return Rules.parse(Variable.get(VAR_FOLLOWUP_RULES, default=None))


def as_utc(value: datetime) -> datetime:
    """A stdlib UTC datetime (Airflow hands over pendulum DateTimes; Mongo may give naive UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value.timestamp(), UTC)


@dataclass(frozen=True)
class PlanningClock:
    """The two times a run works with: its planning point and the wall clock."""

    point: datetime  # data interval end (UTC)
    now: datetime  # wall clock when the run started planning (UTC)
    backfill: bool = False

    @classmethod
    def of_run(
        cls,
        data_interval_end: datetime | None,
        run_after: datetime | None,
        now: datetime,
        backfill: bool = False,
    ) -> PlanningClock:
        point = data_interval_end or run_after or now
        return cls(point=as_utc(point), now=as_utc(now), backfill=backfill)

    def nudges_allowed(self, hours: NudgeHours) -> bool:
        """Nudges go out at once, so the planning point must be in hours, and so must the wall
        clock for a backfill (a backfilled 20:00 point run at 23:00 would otherwise nudge at night).
        """
        if not hours.contains(self.point):
            return False
        return not self.backfill or hours.contains(self.now)

    def as_dict(self) -> dict[str, Any]:
        return {
            "planning_point": self.point.isoformat(),
            "planning_point_ist": self.point.astimezone(IST).isoformat(),
            "now": self.now.isoformat(),
            "backfill": self.backfill,
        }


def ist_date(when: datetime) -> str:
    return when.astimezone(IST).date().isoformat()


def utc_iso(when: datetime) -> str:
    """``2026-11-21T09:30:00Z``: the form event ids use."""
    return as_utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def hours(value: float) -> timedelta:
    return timedelta(hours=value)


def days(value: float) -> timedelta:
    return timedelta(days=value)
