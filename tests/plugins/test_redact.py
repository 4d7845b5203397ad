"""Nothing the view shows carries a phone number beyond its last 4 digits, a message or a secret."""

from __future__ import annotations

import json
import string

from hypothesis import given, settings
from hypothesis import strategies as st

PHONES = st.builds(
    lambda prefix, digits: prefix + digits,
    st.sampled_from(["+", "", "00"]),
    st.text(alphabet=string.digits, min_size=10, max_size=15),
)
# What summaries legitimately hold and must survive untouched: ids, ISO times, counts, codes.
SAFE = st.one_of(
    st.integers(-(10**6), 10**6),
    st.sampled_from(["2026-12-06 11:00 IST", "2026-12-06T05:30:00+00:00", "131026", "send_failed_131026"]),
    st.builds(
        lambda user, hour: f"site_visit_reminder:{user}:2026-12-06T{hour:02d}:30:00Z",
        st.integers(1, 99999),
        st.integers(0, 23),
    ),
)
SECRET_KEYS = st.sampled_from(["text", "body", "phone", "to", "wa_id", "password", "token", "signature"])


def _with_phone(phone: str) -> st.SearchStrategy[str]:
    return st.sampled_from([phone, f"number {phone} refused", f"{phone}:event", f"user({phone})"])


@st.composite
def summaries(draw: st.DrawFn) -> tuple[dict, list[str], list[str], list]:
    phones = draw(st.lists(PHONES, min_size=1, max_size=3))
    secrets = [f"secret-{n}-{draw(st.text(alphabet=string.ascii_letters, min_size=6, max_size=12))}" for n in range(2)]
    safe = draw(st.lists(SAFE, max_size=4))
    summary = {
        "counts": {"sent": draw(st.integers(0, 50)), "ids": safe},
        "problem_event_ids": [draw(_with_phone(p)) for p in phones],
        "nested": {draw(SECRET_KEYS): secrets[0], "deeper": [{draw(SECRET_KEYS): secrets[1]}]},
    }
    return summary, phones, secrets, safe


@settings(max_examples=150, deadline=None, derandomize=True)
@given(summaries())
def test_phones_are_cut_to_four_digits_and_secrets_hidden(generated) -> None:
    from leadflow_ui.redact import redact

    summary, phones, secrets, safe = generated
    shown = redact(summary)
    text = json.dumps(shown)
    for phone in phones:
        digits = phone.lstrip("+")
        assert digits not in text
        assert digits[-4:] in text  # still tells people which number, by its tail
    for secret in secrets:
        assert secret not in text
    assert shown["counts"]["ids"] == safe
