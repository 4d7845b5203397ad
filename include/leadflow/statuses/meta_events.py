"""What Meta's webhooks say about money and templates: per-message pricing and template categories.

**Pricing.** Each ``sent`` / ``delivered`` / ``read`` status carries ``pricing`` (``category``:
marketing, utility, authentication, service; ``type``: regular, free_customer_service,
free_entry_point; ``pricing_model``: PMP; ``billable``). It is stored once per message on its
ledger document as ``delivery.pricing`` (:func:`record_pricing`: the first report wins, so a
repeated receipt is not counted twice), and the ``whatsapp_statuses`` run summary counts
messages and estimated cost per category (:class:`PricingTally`). The price per message comes
from Variable ``leadflow_whatsapp_price_per_message`` (JSON, USD per message per category, merged
over :data:`DEFAULT_PRICES`); a message Meta reports as not billable (or of a free ``type``)
costs 0.

**Template categories.** Meta can re-categorise an approved template (``template_category_update``
webhook: done, or announced with a date). Every such webhook is stored in
``whatsapp_template_events`` (:func:`record_template_update`, one document per notification, so a
redelivered webhook is not recorded or alerted twice) and alerted once
(:func:`publish_template_alert`): a reminder template becoming MARKETING means the reminders are
billed as marketing and fall under Meta's per-user marketing limit (131049).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from leadflow.statuses.webhook import TemplateCategoryUpdate

log = logging.getLogger(__name__)

VAR_PRICES = "leadflow_whatsapp_price_per_message"
TEMPLATE_EVENTS = "whatsapp_template_events"
# USD per delivered message, Meta's rate card for India (recipient country code +91) under
# per-message pricing; check the current card and set the Variable for other markets.
DEFAULT_PRICES: dict[str, float] = {
    "marketing": 0.0107,
    "utility": 0.0014,
    "authentication": 0.0014,
    "service": 0.0,
}
FREE_TYPES = frozenset({"free_customer_service", "free_entry_point"})


def parse_prices(raw: str | dict[str, Any] | None) -> dict[str, float]:
    """The Variable merged over the defaults; a bad value fails the run instead of costing 0."""
    prices = dict(DEFAULT_PRICES)
    data = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw if isinstance(raw, dict) else {})
    for category, price in data.items():
        value = float(price)
        if value < 0:
            raise ValueError(f"Variable {VAR_PRICES}: the price of {category!r} must be >= 0")
        prices[str(category).lower()] = value
    return prices


def record_pricing(collection: Collection, event_id: str, pricing: dict[str, Any] | None) -> bool:
    """Store ``delivery.pricing`` unless the event has it already; True the first time."""
    if not pricing:
        return False
    result = collection.update_one(
        {"_id": event_id, "delivery.pricing": {"$exists": False}}, {"$set": {"delivery.pricing": pricing}}
    )
    return result.modified_count == 1


def is_billable(pricing: dict[str, Any]) -> bool:
    return pricing.get("billable") is not False and pricing.get("type") not in FREE_TYPES


@dataclass
class PricingTally:
    """Messages and estimated cost per category of one run (each message counted once)."""

    prices: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    messages: Counter[str] = field(default_factory=Counter)
    billable: Counter[str] = field(default_factory=Counter)

    def add(self, pricing: dict[str, Any]) -> None:
        category = str(pricing.get("category") or "unknown").lower()
        self.messages[category] += 1
        if is_billable(pricing):
            self.billable[category] += 1

    def as_dict(self) -> dict[str, Any]:
        by_category: dict[str, Any] = {}
        total: float | None = 0.0
        for category in sorted(self.messages):
            price = self.prices.get(category)
            cost = None if price is None else round(self.billable[category] * price, 6)
            by_category[category] = {
                "messages": self.messages[category],
                "billable": self.billable[category],
                "estimated_cost_usd": cost,
            }
            total = None if cost is None or total is None else total + cost
        return {"by_category": by_category, "estimated_cost_usd": None if total is None else round(total, 6)}


def _event_id(update: TemplateCategoryUpdate) -> str:
    key = "|".join(
        str(part)
        for part in (
            update.template_id,
            update.previous_category,
            update.new_category,
            update.correct_category,
            update.effective_at,
            update.notified_at,
        )
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def record_template_update(collection: Collection, update: TemplateCategoryUpdate) -> bool:
    """Store one notification; False if this very notification was stored before (a redelivery)."""
    try:
        collection.insert_one({"_id": _event_id(update), **update.as_dict(), "recorded_at": datetime.now(UTC)})
    except DuplicateKeyError:
        return False
    return True


def affected_event_types(update: dict[str, Any], templates: dict[str, Any]) -> dict[str, str]:
    """``{event_type: configured category}`` of the event types that send this template."""
    return {
        event_type: template.category
        for event_type, template in templates.items()
        if template.name == update.get("name") and (update.get("language") in (None, template.language))
    }


def _current_run_id() -> str:
    try:
        from airflow.sdk import get_current_context

        return str(get_current_context()["run_id"])
    except RuntimeError:  # outside a task
        return ""


def publish_template_alert(
    updates: list[dict[str, Any]], templates: dict[str, Any], dag_id: str, run_id: str | None = None
) -> bool:
    """One alert per run that recorded template category changes (the run's new notifications)."""
    if not updates:
        return False
    from leadflow.alerts import publish_alert

    run_id = run_id if run_id is not None else _current_run_id()
    changes, serious = [], []
    for update in updates:
        now_or_soon = str(update.get("correct_category") or update.get("new_category") or "").upper()
        uses = affected_event_types(update, templates)
        mismatched = sorted(event_type for event_type, category in uses.items() if category != now_or_soon)
        changes.append({**update, "category": now_or_soon, "used_by": sorted(uses), "configured_otherwise": mismatched})
        serious += mismatched
    names = ", ".join(sorted({str(u.get("name")) for u in updates}))
    subject = f"[leadflow] {dag_id}: WhatsApp template category changed ({names})"
    lines = {
        "dag": dag_id,
        "run": run_id,
        "changes": changes,
        "effect": (
            f"event types {sorted(set(serious))} now send a template of another category than configured: "
            "a reminder template in MARKETING is billed as marketing and subject to Meta's per-user "
            "marketing limit (131049); fix the template in WhatsApp Manager or its category in "
            "leadflow_whatsapp_templates"
            if serious
            else "no configured event type is affected"
        ),
        "where": f"MongoDB {TEMPLATE_EVENTS}",
    }
    return publish_alert(subject, lines)


class MetaEvents:
    """The statuses processor's hook for pricing, marketing refusals and template categories."""

    def __init__(
        self,
        deliveries: Collection,
        users: Collection,
        template_events: Collection,
        prices: dict[str, float] | None = None,
    ) -> None:
        self.deliveries = deliveries
        self.users = users
        self.template_events = template_events
        self.tally = PricingTally(prices if prices is not None else dict(DEFAULT_PRICES))
        self.marketing_holds: Counter[str] = Counter()
        self.template_updates: list[dict[str, Any]] = []

    def on_receipt(self, doc: dict[str, Any], receipt: Any, applied: str) -> None:
        """After :meth:`DeliveryLedger.apply`: pricing of a receipt that moved the delivery
        forward; the buyer's marketing hold after an asynchronous 131049 / 131050."""
        from leadflow.marketing import record_refusal

        if applied in ("recorded", "confirmed") and record_pricing(self.deliveries, str(doc["_id"]), receipt.pricing):
            self.tally.add(receipt.pricing)
        if receipt.status == "failed":
            hold = record_refusal(self.users, doc.get("user_id"), receipt.error_code, receipt.at)
            if hold is not None:
                self.marketing_holds[hold] += 1

    def on_template_update(self, update: TemplateCategoryUpdate) -> None:
        if record_template_update(self.template_events, update):
            log.warning(
                "Template %s (%s): category %s -> %s%s",
                update.name,
                update.language,
                update.previous_category or update.new_category,
                update.category_now_or_soon,
                f" from {update.effective_at:%Y-%m-%d %H:%M} UTC" if update.impending and update.effective_at else "",
            )
            self.template_updates.append(update.as_dict())

    def summary(self) -> dict[str, Any]:
        """Counts for the run summary (XCom): no ids of buyers, no texts."""
        from leadflow.timefmt import utc

        updates = [{k: utc(v) if isinstance(v, datetime) else v for k, v in u.items()} for u in self.template_updates]
        return {
            "pricing": self.tally.as_dict(),
            "marketing_holds": dict(self.marketing_holds),
            "template_category_updates": updates,
        }

    @classmethod
    def from_airflow(cls, db: Any) -> MetaEvents:
        from airflow.sdk import Variable

        from leadflow.config import DELIVERIES, USERS

        prices = parse_prices(Variable.get(VAR_PRICES, default=None))
        return cls(db[DELIVERIES], db[USERS], db[TEMPLATE_EVENTS], prices)
