"""The status page's HTML, rendered from plain values: escaping, actions, read-only mode."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

from piko.core.types import InstanceInfo, JobStatus, RunRecord, RunStatus
from piko.http.page import PageView, render_page, template

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script>'


def run(run_id: int, job_id: str = "etl", status: RunStatus = RunStatus.SUCCESS, **kw: object) -> RunRecord:
    fields: dict = {"run_id": run_id, "job_id": job_id, "scheduled_at": NOW - timedelta(minutes=run_id),
                    "status": status, "attempt": 1, "kind": "schedule", "instance_id": "host:1:abc",
                    "started_at": NOW, "finished_at": NOW, "duration_s": 0.5, "error_type": None,
                    "error_message": None}
    fields.update(kw)
    return RunRecord(**fields)


def view(**kw: object) -> PageView:
    fields: dict = {
        "jobs": [JobStatus("etl", "cron", "*/5 * * * *", True, NOW + timedelta(seconds=30), run(1)),
                 JobStatus("paused_job", "interval", '{"seconds": 10}', False, None, None)],
        "runs": [run(1), run(2, status=RunStatus.RUNNING)],
        "failures": [run(3, status=RunStatus.FAILED, error_type="ValueError", error_message="bad row")],
        "instances": [InstanceInfo("host:1:abc", "host", 1, NOW, heartbeat_at=NOW - timedelta(seconds=2),
                                   role="scheduler")],
        "queues": None, "now": NOW, "role": "leader", "is_read_only": False}
    fields.update(kw)
    return PageView(**fields)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Elements:
    found = Elements()
    found.feed(html)
    return found


def test_a_job_id_and_an_error_holding_script_tags_are_shown_as_text_never_as_markup() -> None:
    evil_job = JobStatus(EVIL, "cron", EVIL, True, None, run(4, EVIL, RunStatus.FAILED))
    failure = run(5, EVIL, RunStatus.FAILED, error_type="RuntimeError", error_message=EVIL,
                  error_traceback=f"Traceback ...\n{EVIL}")
    html = render_page(view(jobs=[evil_job], runs=[failure], failures=[failure], job_filter=EVIL), "n0nce")
    page = parse(html)
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"nonce": "n0nce"}]  # only the page's own script
    assert EVIL not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert EVIL in "".join(page.text)  # shown to the reader as the text it is
    buttons = [attrs for tag, attrs in page.tags if tag == "button" and attrs.get("data-job") == EVIL]
    assert {b["data-action"] for b in buttons} == {
        "api/jobs/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E/run",
        "api/jobs/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E/pause"}


def test_a_value_that_looks_like_a_template_slot_stays_text() -> None:
    html = render_page(view(jobs=[JobStatus("{{nonce}}", "cron", "{{jobs}}", True, None, None)]), "n0nce")
    assert "<code>{{nonce}}</code>" in html and "{{jobs}}" in html
    assert not re.search(r"\{\{(?!nonce\}\}|jobs\}\})\w+\}\}", html)  # every real slot was filled


def test_every_slot_of_the_template_is_filled() -> None:
    assert "{{" not in render_page(view(), "n").replace("{{nonce}}", "").replace("{{jobs}}", "")
    assert set(re.findall(r"\{\{(\w+)\}\}", template())) >= {"jobs", "runs", "failures", "instances", "nonce"}


def test_jobs_show_schedule_next_fire_last_status_and_state_with_their_actions() -> None:
    page = parse(render_page(view(), "n"))
    text = " ".join(" ".join(page.text).split())
    assert "cron */5 * * * *" in text and "in 30 s" in text and "SUCCESS" in text and "paused" in text
    actions = {(a.get("data-job"), a["data-action"]) for tag, a in page.tags if tag == "button" and "data-action" in a}
    assert ("etl", "api/jobs/etl/pause") in actions and ("paused_job", "api/jobs/paused_job/resume") in actions
    assert ("etl", "api/jobs/etl/run") in actions
    assert (None, "api/runs/2/cancel") in actions  # a RUNNING run can be cancelled
    assert (None, "api/runs/3/rerun") in actions  # a FAILED one re-run
    assert (None, "api/runs/1/cancel") not in actions and (None, "api/runs/1/rerun") not in actions


def test_a_read_only_page_has_no_action_buttons_no_token_field_and_says_why() -> None:
    html = render_page(view(is_read_only=True), "n")
    page = parse(html)
    assert not [a for tag, a in page.tags if tag == "button" and "data-action" in a]
    assert not [a for tag, a in page.tags if a.get("id") == "token"]
    assert "Read-only: set <code>http_admin_token</code>" in html
    assert ("body", {"data-read-only": "true"}) in page.tags


def test_failures_show_the_error_and_the_traceback_behind_details() -> None:
    failure = run(9, status=RunStatus.TIMEOUT, error_type="JobTimeout", error_message="x" * 500,
                  error_traceback="Traceback (most recent call last):\n  File 'etl.py'")
    html = render_page(view(failures=[failure]), "n")
    assert "JobTimeout: " + "x" * 100 in html and "<details>" in html and "File &#x27;etl.py&#x27;" in html


def test_queues_show_only_in_cluster_execution() -> None:
    assert 'id="queues"' not in render_page(view(), "n")
    html = render_page(view(queues={"default": 3, "io": 0}), "n")
    assert 'id="queues"' in html and "cluster execution" in html
    assert '<td><code>default</code></td><td class="num">3</td>' in html


def test_the_filters_keep_the_chosen_status_job_and_limit() -> None:
    html = render_page(view(status_filter=RunStatus.FAILED, job_filter="etl", limit=7), "n")
    assert '<option value="FAILED" selected>' in html and '<option value="etl" selected>' in html
    assert 'name="limit" type="number" min="1" max="500" value="7"' in html


def test_the_page_needs_no_external_asset() -> None:
    page = parse(render_page(view(), "n"))
    external = [a for tag, a in page.tags if tag in ("script", "link", "img", "iframe") and (a.get("src") or a.get("href"))]
    assert external == []
