"""The WhatsApp templates configured per event type (Variable ``leadflow_whatsapp_templates``):
read by the follow-ups when they send and by the receipts when a 131047 needs the template resend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from leadflow.marketing import CATEGORIES, DEFAULT_CATEGORIES, MARKETING
from leadflow.messaging.whatsapp import Template


@dataclass(frozen=True)
class TemplateConfig:
    templates: dict[str, Template]

    @classmethod
    def parse(cls, raw: str | dict[str, Any] | None) -> TemplateConfig:
        """``{"language": "en", "templates": {event_type: name | {"name", "language", "media_header",
        "category"}}}``. ``category`` is the one the template is approved in; by default UTILITY for
        reminders and MARKETING for nudges (:data:`leadflow.marketing.DEFAULT_CATEGORIES`)."""
        data = json.loads(raw) if isinstance(raw, str) else (raw or {})
        language = str(data.get("language") or "en")
        templates: dict[str, Template] = {}
        for event_type, spec in (data.get("templates") or {}).items():
            default_category = DEFAULT_CATEGORIES.get(event_type, MARKETING)
            if isinstance(spec, str):
                templates[event_type] = Template(spec, language, category=default_category)
            elif isinstance(spec, dict) and spec.get("name"):
                category = str(spec.get("category") or default_category).upper()
                if category not in CATEGORIES:
                    raise ValueError(f"template of {event_type}: category must be one of {CATEGORIES}")
                templates[event_type] = Template(
                    str(spec["name"]), str(spec.get("language") or language), bool(spec.get("media_header")), category
                )
        return cls(templates)

    def category(self, event_type: str) -> str:
        """The Meta category an event type's messages count as (its template's; MARKETING if unknown)."""
        template = self.templates.get(event_type)
        return template.category if template is not None else DEFAULT_CATEGORIES.get(event_type, MARKETING)
