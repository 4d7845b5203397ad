"""``python -m devstack.whatsapp_server outbox --data-dir DIR``: the stand-in's accepted messages,
oldest first (``make outbox``), each with

* ``delivery``: the receipts the stand-in reported for it (posted, dropped by a fault, lost);
* ``ledger``: what leadflow recorded — the event's ``state`` and ``delivery.status`` in
  ``followup_deliveries`` — when DIR belongs to a running stack (``stack.json`` next to it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devstack.whatsapp_receipts import RECEIPTS_FILE, delivery_line, read_receipts
from devstack.whatsapp_server import MEDIA_TYPES, OUTBOX_FILE, read_outbox


def _describe_text(entry: Mapping[str, Any]) -> str:
    return str(entry["text"]["body"])


def _describe_media(entry: Mapping[str, Any]) -> str:
    media = entry[entry["type"]]
    caption = media.get("caption")
    return f"{media.get('link') or 'media id ' + str(media.get('id'))}" + (f"\ncaption: {caption}" if caption else "")


def _describe_template(entry: Mapping[str, Any]) -> str:
    template = entry["template"]
    params = [
        str(parameter.get("text", parameter.get("type")))
        for component in template.get("components") or []
        for parameter in component.get("parameters") or []
    ]
    head = f"{template['name']} ({template['language']['code']})"
    return head + (f"\nparameters: {' | '.join(params)}" if params else "")


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "text": _describe_text,
    **dict.fromkeys(MEDIA_TYPES, _describe_media),
    "template": _describe_template,
}


def outbox_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.whatsapp_server outbox",
        description="Print the messages the WhatsApp stand-in accepted, oldest first.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="the server's --data-dir")
    args = parser.parse_args(argv)
    entries = list(read_outbox(args.data_dir / OUTBOX_FILE))
    receipts = read_receipts(args.data_dir / RECEIPTS_FILE)
    ledger = _ledger_by_wamid(args.data_dir.parent)
    if not entries:
        print(f"the outbox in {args.data_dir} is empty")
        return 0
    for number, entry in enumerate(entries, 1):
        kind = entry.get("type", "text")
        describe = _DESCRIBERS.get(kind, lambda e: json.dumps(e, ensure_ascii=False))
        print(f"#{number}  {entry.get('received_at')}  to {entry.get('to')}  [{kind}]  {entry.get('wamid')}")
        for line in describe(entry).splitlines() or [""]:
            print(f"    {line}")
        wamid = str(entry.get("wamid"))
        print(f"    delivery: {delivery_line(receipts.get(wamid, []))}")
        if ledger is not None:
            print(f"    ledger: {_ledger_line(ledger.get(wamid), entry)}")
    print(f"{len(entries)} message(s)")
    return 0


def _ledger_by_wamid(state_dir: Path) -> dict[str, dict[str, Any]] | None:
    """Ledger documents by every wamid they know (original and resend), if the stack is up."""
    if not (state_dir / "stack.json").exists():
        return None
    import pymongo

    from devstack.services import Stack

    try:
        stack = Stack.load(state_dir)
        with pymongo.MongoClient(stack.mongo_uri, serverSelectionTimeoutMS=1500) as client:
            docs = list(
                client.leadflow.followup_deliveries.find({}, {"state": 1, "wamid": 1, "delivery": 1, "resend": 1})
            )
    except Exception:  # noqa: BLE001 - the stack is not running: show the stand-in's view only
        return None
    by_wamid: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for wamid in (doc.get("wamid"), (doc.get("resend") or {}).get("wamid")):
            if wamid:
                by_wamid[str(wamid)] = doc
    return by_wamid


def _ledger_line(doc: dict[str, Any] | None, entry: Mapping[str, Any]) -> str:
    if doc is None:
        callback = entry.get("biz_opaque_callback_data")
        return f"no event with this wamid{f' (callback {callback})' if callback else ''}"
    delivery = (doc.get("delivery") or {}).get("status") or "no receipt yet"
    resend = doc.get("resend")
    if resend and resend.get("wamid") != entry.get("wamid"):
        delivery = f"{(resend.get('replaced_delivery') or {}).get('status', '?')}, replaced by a resend"
    return f"event {doc['_id']}: state {doc.get('state')}, delivery {delivery}"
