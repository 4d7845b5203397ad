"""What Meta's marketing rules allow for one buyer, shared by the planner, the sends and the receipts.

Meta sorts template messages into categories. A site-visit reminder is a UTILITY message (about
a transaction the buyer started; not subject to the per-user marketing limit); the cost-sheet and
hot-lead nudges are MARKETING. For marketing messages Meta answers (synchronously or in a
``failed`` status webhook, whichever way it comes):

* ``131049`` "not delivered to maintain healthy ecosystem engagement": the buyer reached Meta's
  per-user marketing limit; Meta asks not to send them marketing again for at least 24 hours.
  Stored on the user as ``marketing_paused_until`` (now + 24 h, never shortened);
* ``131050`` the buyer chose to stop receiving marketing messages from the business: stored on the
  user as ``marketing_opt_out: true`` (with ``marketing_opt_out_at``) until the buyer opts in again
  (a person or the chatbot clears the field).

Neither is a failure of ours and retrying cannot help: the planner does not plan marketing for
such a buyer, and a marketing event that still arrives is skipped at send time
(``marketing_opted_out`` / ``marketing_limit``). Reminders are not affected.

This module is shared (``followups``, ``statuses`` and ``planner`` import it; it imports none of them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection

MARKETING_LIMIT = 131049
MARKETING_OPTED_OUT = 131050
MARKETING_CODES = frozenset({MARKETING_LIMIT, MARKETING_OPTED_OUT})
MARKETING_PAUSE = timedelta(hours=24)

UTILITY = "UTILITY"
MARKETING = "MARKETING"
CATEGORIES = (UTILITY, MARKETING, "AUTHENTICATION")
# The category each event type's template is approved in (overridable per event type in
# ``leadflow_whatsapp_templates``, see leadflow.followups.settings.TemplateConfig).
DEFAULT_CATEGORIES = {
    "site_visit_reminder": UTILITY,
    "cost_sheet_followup": MARKETING,
    "inquiry_followup": MARKETING,
}

# User document fields (also the planner's and the send-time projection).
OPT_OUT = "marketing_opt_out"
OPT_OUT_AT = "marketing_opt_out_at"
PAUSED_UNTIL = "marketing_paused_until"
USER_FIELDS = {OPT_OUT: 1, PAUSED_UNTIL: 1}

HOLD_OPTED_OUT = "marketing_opted_out"
HOLD_LIMIT = "marketing_limit"


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def marketing_hold(user: dict[str, Any], now: datetime) -> str | None:
    """Why no marketing message may go to ``user`` now (``marketing_opted_out`` /
    ``marketing_limit``), or None."""
    if user.get(OPT_OUT) is True:
        return HOLD_OPTED_OUT
    paused_until = _aware(user.get(PAUSED_UNTIL))
    if paused_until is not None and paused_until > now:
        return HOLD_LIMIT
    return None


def hold_for_code(code: int | str | None) -> str | None:
    """The hold a Meta error code puts on the buyer, or None for any other code."""
    try:
        number = int(str(code))
    except (TypeError, ValueError):
        return None
    return {MARKETING_LIMIT: HOLD_LIMIT, MARKETING_OPTED_OUT: HOLD_OPTED_OUT}.get(number)


def record_refusal(users: Collection, user_id: Any, code: int | str | None, at: datetime) -> str | None:
    """Store what Meta's ``code`` says about the buyer (see the module docstring); returns the
    hold, or None (nothing stored) for a code that is not about marketing."""
    hold = hold_for_code(code)
    if hold is None or user_id is None:
        return hold
    from bson import ObjectId

    key = ObjectId(user_id) if isinstance(user_id, str) and ObjectId.is_valid(user_id) else user_id
    if hold == HOLD_LIMIT:
        users.update_one({"_id": key}, {"$max": {PAUSED_UNTIL: at + MARKETING_PAUSE}})
    else:
        users.update_one({"_id": key, OPT_OUT: {"$ne": True}}, {"$set": {OPT_OUT: True, OPT_OUT_AT: at}})
    return hold
