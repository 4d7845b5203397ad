"""The FastAPI app the plugin mounts at ``/leadflow`` in Airflow's api-server.

Server-rendered HTML (the UI shows it in an iframe as a nav page and as a run's "Summary" tab)
plus the same numbers as JSON. Every route depends on :mod:`.access`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.api_fastapi.common.db.common import SessionDep
from fastapi import FastAPI, HTTPException, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from leadflow_ui import airflow_state, overview
from leadflow_ui.access import LeadflowDag, LeadflowDags

URL_PREFIX = "/leadflow"
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["tojson_attr"] = lambda value: json.dumps(value, sort_keys=True)


def _shown(value: Any) -> Any:
    # USD amounts of a few cents: fixed decimals, never 9.6e-05.
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else value


TEMPLATES.filters["shown"] = _shown

# The page's rows: (label, DayStats field). Breakdowns by reason/code follow as their own tables.
FUNNEL = [
    ("Planned (enqueued by the planner)", "planned"),
    ("Events processed", "events"),
    ("Sent", "sent"),
    ("Delivered", "delivered"),
    ("Read", "read"),
    ("Failed", "failed"),
    ("Skipped", "skipped"),
    ("Dead-lettered", "dead_lettered"),
    ("Unknown outcome", "unknown_outcome"),
    ("Not decided yet (pending/sending)", "in_progress"),
    ("Template text instead of OpenAI (fallbacks)", "fallbacks"),
    ("Reminders sent late", "reminders_late"),
    ("Reminders expired (not sent)", "reminders_expired"),
    ("OpenAI tokens", "total_tokens"),
    ("OpenAI estimated cost (USD)", "estimated_cost_usd"),
    ("OpenAI budget used (tokens)", "budget_tokens_used"),
]
BREAKDOWNS = [
    ("Failed by error code", "failed_by_code"),
    ("Skipped by reason", "skipped_by_reason"),
    ("Dead-lettered by reason", "dead_lettered_by_reason"),
    ("Fallbacks by reason", "fallbacks_by_reason"),
    ("WhatsApp billable messages by pricing category", "billable_by_category"),
]


def _breakdown(days: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    keys = sorted({key for day in days for key in day[name]})
    return [
        {"key": key, "today": days[0][name].get(key, 0), "week": sum(day[name].get(key, 0) for day in days)}
        for key in keys
    ]


app = FastAPI(title="Leadflow", description="The data team's view of the leadflow DAGs (read-only).")


@app.get("/api/overview")
def overview_json(session: SessionDep, dag_ids: LeadflowDags) -> dict[str, Any]:
    return overview.build(session, dag_ids)


@app.get("/", response_class=HTMLResponse)
def overview_page(session: SessionDep, dag_ids: LeadflowDags) -> HTMLResponse:
    data = overview.build(session, dag_ids)
    days = data["days"]
    breakdowns = [(title, name, _breakdown(days, name)) for title, name in BREAKDOWNS]
    html = TEMPLATES.get_template("overview.html").render(data=data, days=days, funnel=FUNNEL, breakdowns=breakdowns)
    return HTMLResponse(html)


def _summary(session: SessionDep, dag_id: str, run_id: str) -> dict[str, Any]:
    summary = airflow_state.run_summary(session, dag_id, run_id)
    if summary is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{dag_id} has no run {run_id}")
    return summary


@app.get("/api/runs/{dag_id}/{run_id}")
def run_summary_json(dag_id: LeadflowDag, run_id: str, session: SessionDep) -> dict[str, Any]:
    return _summary(session, dag_id, run_id)


@app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_summary_page(dag_id: LeadflowDag, run_id: str, session: SessionDep) -> HTMLResponse:
    summary = _summary(session, dag_id, run_id)
    tasks = [(task_id, airflow_state.flatten(value)) for task_id, value in summary["tasks"].items()]
    html = TEMPLATES.get_template("summary.html").render(summary=summary, tasks=tasks)
    return HTMLResponse(html)
