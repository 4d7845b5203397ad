"""A hand-written day of chat data (20 interactions) and the report rows it must produce.

The expected rows are written out by hand from the report rules, not computed by the code under
test: an hour-crossing session (S1), a user with two sessions (S1, S2), a night session covered
by the 09:00 run (S3), messy documents (S4: no name, invalid mobile, ranking 3, an intent of the
wrong type, a null timestamp), an unknown user (S5), a name that looks like a formula (S6),
an interaction without a session, and an older session (S7) that only the consolidated row counts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bson import ObjectId

IST = ZoneInfo("Asia/Kolkata")
DAY = (2026, 11, 20)
FORMULA_NAME = '=HYPERLINK("http://evil.example","click me")'

U1 = ObjectId("650000000000000000000001")
U2 = ObjectId("650000000000000000000002")
U3 = ObjectId("650000000000000000000003")
U4 = ObjectId("650000000000000000000004")
UX = ObjectId("6500000000000000000000ff")  # not in users


def ist(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=IST)


USERS = [
    {"_id": U1, "name": "Ananya Sharma", "mobile": "098765-43210", "preferred_configuration": ["2BHK", "3BHK"],
     "ranking": "High", "inquiry_type": "site_visit",
     "site_visit": {"scheduled_at": ist(22, 15, 0).astimezone(UTC), "status": "scheduled"}},
    {"_id": U2, "name": "Rohan Iyer", "mobile": "+91 91234 56789", "preferred_configuration": "3BHK",
     "ranking": "Medium", "inquiry_type": "cost_sheet",
     "site_visit": {"scheduled_at": ist(18, 11, 0).astimezone(UTC), "status": "completed"}},
    {"_id": U3, "mobile": "12345", "ranking": 3, "inquiry_type": "general"},
    {"_id": U4, "name": FORMULA_NAME, "mobile": "9988776655", "preferred_configuration": "4BHK",
     "ranking": "Low", "site_visit": {"status": "scheduled"}},
]  # fmt: skip


def _doc(n: int, user, session, when, role="user", intent=None) -> dict:
    doc = {"_id": ObjectId(f"66000000000000000000{n:04d}"), "user_id": user, "role": role,
           "text": f"message {n}", "timestamp": when.astimezone(UTC) if when else None, "intent": intent}  # fmt: skip
    if session is not None:
        doc["session_id"] = session
    return doc


INTERACTIONS = [
    # S1: Ananya, crosses 11:00 → one row, 13 min 59 s → 13, Site Visit ×2 beats Pricing ×1.
    _doc(1, U1, "S1", ist(20, 10, 50, 0), intent="Site Visit"),
    _doc(2, U1, "S1", ist(20, 10, 55, 30), role="assistant"),
    _doc(3, U1, "S1", ist(20, 11, 2, 10), intent="Pricing"),
    _doc(4, U1, "S1", ist(20, 11, 3, 59), intent="Site Visit"),
    # S2: Ananya again; Pricing and Amenities tie → the latest (Amenities). 12 min 59 s → 12.
    _doc(5, U1, "S2", ist(20, 14, 10, 0), intent="Pricing"),
    _doc(6, U1, "S2", ist(20, 14, 15, 0), intent="Amenities"),
    _doc(7, U1, "S2", ist(20, 14, 22, 59), role="assistant"),
    # S3: Rohan, overnight, covered by the 09:00 run (21:00 → 09:00).
    _doc(8, U2, "S3", ist(19, 23, 40, 0), intent="Location"),
    _doc(9, U2, "S3", ist(19, 23, 58, 0), role="assistant"),
    _doc(10, U2, "S3", ist(20, 0, 20, 30)),
    # S4: the messy profile; an intent of the wrong type and a null timestamp (skipped).
    _doc(11, U3, "S4", ist(20, 12, 5, 0), intent=7),
    _doc(12, U3, "S4", ist(20, 12, 6, 0), role="assistant"),
    _doc(13, U3, "S4", None),
    # S5: a user id the users collection does not know.
    _doc(14, UX, "S5", ist(20, 15, 30, 0), intent="Cost Sheet"),
    _doc(15, UX, "S5", ist(20, 15, 31, 0), role="assistant"),
    # S6: a name that must stay text in the sheet.
    _doc(16, U4, "S6", ist(20, 20, 45, 0), intent="Cost Sheet"),
    _doc(17, U4, "S6", ist(20, 20, 59, 0), role="assistant"),
    # No session: cannot be placed (skipped, counted).
    _doc(18, U2, None, ist(20, 16, 0, 0)),
    # S7: Rohan's older session: no run of the 20th touches it, but his lead row counts it.
    _doc(19, U2, "S7", ist(19, 18, 0, 0), intent="Pricing"),
    _doc(20, U2, "S7", ist(19, 18, 5, 0), role="assistant"),
]

SESSION_HEADER = ["Session ID", "Name", "Mobile", "Session Start", "Session End", "Chat Length (min)",
                  "Messages", "Intent Detected", "User ID"]  # fmt: skip
# Start/End as IST wall times; the sheet holds them as serial numbers.
EXPECTED_SESSIONS = [
    ["S3", "Rohan Iyer", "+919123456789", ist(19, 23, 40, 0), ist(20, 0, 20, 30), 40, 3, "Location", str(U2)],
    ["S1", "Ananya Sharma", "+919876543210", ist(20, 10, 50, 0), ist(20, 11, 3, 59), 13, 4, "Site Visit", str(U1)],
    ["S4", "", "12345", ist(20, 12, 5, 0), ist(20, 12, 6, 0), 1, 2, "", str(U3)],
    ["S2", "Ananya Sharma", "+919876543210", ist(20, 14, 10, 0), ist(20, 14, 22, 59), 12, 3, "Amenities", str(U1)],
    ["S5", "", "", ist(20, 15, 30, 0), ist(20, 15, 31, 0), 1, 2, "Cost Sheet", str(UX)],
    ["S6", FORMULA_NAME, "+919988776655", ist(20, 20, 45, 0), ist(20, 20, 59, 0), 14, 2, "Cost Sheet", str(U4)],
]  # fmt: skip

CONSOLIDATED_HEADER = ["User ID", "Name", "Mobile", "Config", "Rank", "Chat History", "Visit Scheduled",
                       "Sessions", "Messages", "First Interaction", "Last Interaction"]  # fmt: skip
# Newest activity first.
EXPECTED_LEADS = [
    [str(U4), FORMULA_NAME, "+919988776655", "4BHK", "Low", "Yes", "No", 1, 2, ist(20, 20, 45), ist(20, 20, 59)],
    [str(UX), "", "", "", "", "Yes", "No", 1, 2, ist(20, 15, 30), ist(20, 15, 31)],
    [str(U1), "Ananya Sharma", "+919876543210", "2BHK, 3BHK", "High", "Yes", "Yes", 2, 7,
     ist(20, 10, 50), ist(20, 14, 22, 59)],
    [str(U3), "", "12345", "", "3", "Yes", "No", 1, 2, ist(20, 12, 5), ist(20, 12, 6)],
    [str(U2), "Rohan Iyer", "+919123456789", "3BHK", "Medium", "Yes", "No", 2, 5, ist(19, 18, 0), ist(20, 0, 20, 30)],
]  # fmt: skip
# The dashboard's Visit Status column (site_visit.status as stored; blank without a visit), last.
CONSOLIDATED_HEADER += ["Visit Status"]
for _row, _status in zip(EXPECTED_LEADS, ["scheduled", "", "scheduled", "", "completed"], strict=True):
    _row.append(_status)

# Every IST hour at which the DAG runs on the 20th.
RUN_HOURS = [ist(20, hour, 0) for hour in range(9, 22)]


def serial(when: datetime) -> float:
    """Sheets serial number of an IST wall time, from first principles (days since 1899-12-30)."""
    wall = when.astimezone(IST).replace(tzinfo=None)
    return (wall - datetime(1899, 12, 30)).total_seconds() / 86400


def as_sheet_rows(rows: list[list]) -> list[list]:
    return [[serial(v) if isinstance(v, datetime) else v for v in row] for row in rows]
