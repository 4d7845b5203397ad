"""``python -m devstack.whatsapp_server outbox --data-dir DIR``: the stand-in's accepted messages,
oldest first, each with the delivery receipts the stand-in reported for it (``make outbox``)."""

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
    if not entries:
        print(f"the outbox in {args.data_dir} is empty")
        return 0
    for number, entry in enumerate(entries, 1):
        kind = entry.get("type", "text")
        describe = _DESCRIBERS.get(kind, lambda e: json.dumps(e, ensure_ascii=False))
        print(f"#{number}  {entry.get('received_at')}  to {entry.get('to')}  [{kind}]  {entry.get('wamid')}")
        for line in describe(entry).splitlines() or [""]:
            print(f"    {line}")
        print(f"    delivery: {delivery_line(receipts.get(str(entry.get('wamid')), []))}")
    print(f"{len(entries)} message(s)")
    return 0
