"""The status page as HTML: one self-contained document (status.html, package data) filled in.

Every value that comes from a job, a run or an instance (job ids, schedules, error messages,
tracebacks, host names) goes through html.escape, quotes included, before it reaches the
page; action URLs percent-encode ids first. The template's `{{name}}` slots are filled in one
pass, so a value can never create a slot. No assets, no framework: the inline style and
script carry a per-response nonce, and the Content-Security-Policy allows nothing else.
Read-only pages (no admin token set) render no action buttons. Imports no socket or loop.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from urllib.parse import quote

from piko.core.lifecycle import RERUNNABLE
from piko.core.types import InstanceInfo, JobStatus, RunRecord, RunStatus

_SLOT = re.compile(r"\{\{(\w+)\}\}")
MAX_JOB_ROWS = 1000  # a bigger table is for /api/jobs
ERROR_CHARS = 240  # of an error message shown in a table cell; the rest behind "details"
SCHEDULE_CHARS = 60  # of a schedule expression shown (a field dict can be long)


@dataclass(frozen=True)
class PageView:
    jobs: list[JobStatus]
    runs: list[RunRecord]
    failures: list[RunRecord]
    instances: list[InstanceInfo]
    queues: dict[str, int] | None  # None: leader execution (no queues)
    now: datetime
    role: str
    is_read_only: bool  # no admin token is set: no action buttons
    status_filter: RunStatus | None = None
    job_filter: str | None = None
    limit: int = 50


@lru_cache(maxsize=1)
def template() -> str:
    return resources.files("piko.http").joinpath("status.html").read_text(encoding="utf-8")


def render_page(view: PageView, nonce: str) -> str:
    read_only = view.is_read_only
    slots = {
        "nonce": nonce, "role": _e(view.role), "now": _time(view.now),
        "execution": "cluster" if view.queues is not None else "leader",
        "read_only": "true" if read_only else "false",
        "token_field": "" if read_only else (
            '<input type="password" id="token" placeholder="admin token" autocomplete="off" '
            'aria-label="admin token">'),
        "banner": ('<p class="banner">Read-only: set <code>http_admin_token</code> '
                   '(<code>PIKO_HTTP_ADMIN_TOKEN</code>) on the server to run, pause, resume, cancel and '
                   're-run from this page.</p>') if read_only else "",
        "job_count": str(len(view.jobs)), "jobs": jobs_table(view),
        "failure_count": str(len(view.failures)), "failures": failures_table(view),
        "run_count": str(len(view.runs)), "filters": filters_form(view), "runs": runs_table(view),
        "instance_count": str(len(view.instances)), "instances": instances_table(view),
        "queues": queues_section(view.queues),
    }
    return _SLOT.sub(lambda m: slots[m.group(1)], template())


# -- tables ---------------------------------------------------------------------------------------
def jobs_table(view: PageView) -> str:
    if not view.jobs:
        return '<p class="mute">No job is registered or stored.</p>'
    rows = []
    for job in view.jobs[:MAX_JOB_ROWS]:
        state = "manual" if job.schedule_type is None else "enabled" if job.is_enabled else "paused"
        last = job.last_run
        last_cell = (f'{_badge(last.status.value)} <span class="mute" title="{_time(last.scheduled_at)}">'
                     f'{_ago(view.now, last.scheduled_at)}</span>' if last else '<span class="mute">never ran</span>')
        actions = "" if view.is_read_only or not job.is_registered else _job_actions(job)
        rows.append(f'<tr data-job="{_e(job.job_id)}"><td><code>{_e(job.job_id)}</code></td>'
                    f"<td>{_schedule(job)}</td><td>{_next(view.now, job.next_fire_at)}</td><td>{last_cell}</td>"
                    f"<td>{_badge(state, state)}</td>{_cell(view, actions)}</tr>")
    more = len(view.jobs) - MAX_JOB_ROWS
    tail = f'<p class="mute">{more} more: see <a href="api/jobs">/api/jobs</a>.</p>' if more > 0 else ""
    return _table(view, ("Job", "Schedule", "Next fire", "Last run", "State"), rows) + tail


def runs_table(view: PageView) -> str:
    if not view.runs:
        return '<p class="mute">No run matches.</p>' if view.status_filter or view.job_filter else \
            '<p class="mute">No run is recorded yet.</p>'
    rows = [f'<tr data-run="{r.run_id}"><td class="num">{r.run_id}</td><td><code>{_e(r.job_id)}</code></td>'
            f'<td class="t">{_time(r.scheduled_at)}</td><td>{_badge(r.status.value)}</td><td>{_e(r.kind)}</td>'
            f'<td class="num">{r.attempt}</td><td class="num">{_duration(r.duration_s)}</td>'
            f"<td><code>{_e(r.instance_id)}</code></td><td>{_error(r)}</td>{_cell(view, _run_actions(view, r))}</tr>"
            for r in view.runs]
    return _table(view, ("Run", "Job", "Scheduled", "Status", "Kind", "Att.", "Secs", "Instance", "Error"), rows)


def failures_table(view: PageView) -> str:
    if not view.failures:
        return '<p class="mute">No failed, timed-out or abandoned run.</p>'
    rows = [f'<tr data-run="{r.run_id}"><td class="num">{r.run_id}</td><td><code>{_e(r.job_id)}</code></td>'
            f'<td class="t">{_time(r.scheduled_at)}</td><td>{_badge(r.status.value)}</td><td>{_error(r, full=True)}</td>'
            f"{_cell(view, _run_actions(view, r))}</tr>"
            for r in view.failures]
    return _table(view, ("Run", "Job", "Scheduled", "Status", "Error"), rows)


def instances_table(view: PageView) -> str:
    if not view.instances:
        return '<p class="mute">No live instance.</p>'
    rows = []
    for i in view.instances:
        load = f"{i.running}/{i.capacity}" if i.capacity else str(i.running)
        beat = _ago(view.now, i.heartbeat_at) if i.heartbeat_at else "-"
        rows.append(f"<tr><td><code>{_e(i.instance_id)}</code></td><td>{_e(i.host)} ({i.pid})</td>"
                    f"<td>{_e(i.role or '-')}</td><td>{_e(', '.join(i.queues) or '-')}</td>"
                    f'<td class="num">{load}</td><td>{beat}</td></tr>')
    head = "".join(f"<th>{name}</th>" for name in ("Instance", "Host (pid)", "Role", "Queues", "Running", "Heartbeat"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def queues_section(queues: dict[str, int] | None) -> str:
    if queues is None:
        return ""
    rows = "".join(f'<tr><td><code>{_e(name)}</code></td><td class="num">{depth}</td></tr>'
                   for name, depth in queues.items()) or '<tr><td colspan="2" class="mute">nothing queued</td></tr>'
    return (f'<section id="queues"><h2>Queues</h2><table><thead><tr><th>Queue</th><th>Queued runs</th></tr>'
            f"</thead><tbody>{rows}</tbody></table></section>")


def filters_form(view: PageView) -> str:
    statuses = "".join(f'<option value="{s.value}"{" selected" if s is view.status_filter else ""}>{s.value}</option>'
                       for s in RunStatus)
    job_ids = sorted({j.job_id for j in view.jobs} | ({view.job_filter} if view.job_filter else set()))
    jobs = "".join(f'<option value="{_e(j)}"{" selected" if j == view.job_filter else ""}>{_e(j)}</option>'
                   for j in job_ids)
    return (f'<form class="filters" method="get" action="">'
            f'<label>status <select name="status"><option value="">any</option>{statuses}</select></label>'
            f'<label>job <select name="job"><option value="">any</option>{jobs}</select></label>'
            f'<label>limit <input name="limit" type="number" min="1" max="500" value="{view.limit}"></label>'
            f'<button type="submit">Filter</button></form>')


# -- pieces ---------------------------------------------------------------------------------------
def _table(view: PageView, names: tuple[str, ...], rows: list[str]) -> str:
    head = "".join(f"<th>{name}</th>" for name in names) + ("" if view.is_read_only else "<th></th>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cell(view: PageView, actions: str) -> str:
    return "" if view.is_read_only else f'<td><span class="actions">{actions}</span></td>'


def _job_actions(job: JobStatus) -> str:
    url = "api/jobs/" + quote(job.job_id, safe="")
    toggle = (_button(f"{url}/pause", "Pause", job=job.job_id) if job.is_enabled
              else _button(f"{url}/resume", "Resume", job=job.job_id)) if job.schedule_type else ""
    return _button(f"{url}/run", "Run now", job=job.job_id) + toggle


def _run_actions(view: PageView, run: RunRecord) -> str:
    if view.is_read_only:
        return ""
    if not run.status.is_final:
        return _button(f"api/runs/{run.run_id}/cancel", "Cancel", css="danger")
    if run.status in RERUNNABLE:
        return _button(f"api/runs/{run.run_id}/rerun", "Re-run")
    return ""


def _button(url: str, label: str, *, job: str | None = None, css: str = "") -> str:
    data_job = f' data-job="{_e(job)}"' if job is not None else ""
    klass = f' class="{css}"' if css else ""
    return f'<button type="button"{klass} data-action="{_e(url)}"{data_job}>{label}</button>'


def _schedule(job: JobStatus) -> str:
    if job.schedule_type is None:
        return '<span class="mute">none (manual runs only)</span>'
    expr = job.schedule_expr or ""
    expr = expr if len(expr) <= SCHEDULE_CHARS else expr[:SCHEDULE_CHARS - 3] + "..."
    text = f"{_e(job.schedule_type)} <code>{_e(expr)}</code>"
    if job.timezone:
        text += f' <span class="mute">{_e(job.timezone)}</span>'
    if job.problem:
        text += f'<div class="error">refused: {_e(job.problem[:ERROR_CHARS])}</div>'
    if not job.is_registered:
        text += '<div class="mute">no code of this instance registers it</div>'
    return text


def _error(run: RunRecord, *, full: bool = False) -> str:
    if not run.error_type and not run.error_message:
        return ""
    text = f"{run.error_type or 'Error'}: {run.error_message or ''}".rstrip(": ")
    short = f'<span class="error">{_e(text[:ERROR_CHARS])}{"..." if len(text) > ERROR_CHARS else ""}</span>'
    extra = (text if len(text) > ERROR_CHARS else "") + ("\n\n" + run.error_traceback if run.error_traceback else "")
    if not full or not extra:
        return short
    return f"{short}<details><summary>details</summary><pre>{_e(extra)}</pre></details>"


def _badge(text: str, css: str | None = None) -> str:
    return f'<span class="badge s-{_e(css or text)}">{_e(text)}</span>'


def _next(now: datetime, at: datetime | None) -> str:
    if at is None:
        return '<span class="mute">-</span>'
    seconds = (at - now).total_seconds()
    when = "due now" if seconds <= 0 else f"in {_span(seconds)}"
    return f'<span title="{_time(at)}">{when}</span>'


def _ago(now: datetime, at: datetime) -> str:
    seconds = (now - at).total_seconds()
    return f"{_span(seconds)} ago" if seconds >= 0 else f"in {_span(-seconds)}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}".replace(".0 ", " ")
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def _time(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
