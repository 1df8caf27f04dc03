"""Failed runs reach people: one message to a Slack-compatible webhook, never the URL itself."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from cz_pipeline.defs.alerts import AlertWebhookResource, alert_on_run_failure
from cz_pipeline.lib.alerts import AlertError, FailedRun, alert_text, post_alert
from cz_pipeline.lib.hours import HOUR, HourWindow, partition_key
from cz_pipeline.lib.synthetic import write_to_postgres
from cz_pipeline_tests.fakes.loopback import LoopbackServer
from cz_pipeline_tests.pipeline_runs import execute, fetch_one, run_job

FIRST = datetime(2025, 6, 1, 0, tzinfo=UTC)
HOURS = [FIRST + i * HOUR for i in range(3)]
BAD = HOURS[1]
SECRET_PATH = "/services/T000/B000/secret-token"


class Webhook(LoopbackServer):
    """An incoming webhook on loopback that records what it is sent and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.received: list[dict[str, Any]] = []

    def __enter__(self) -> Webhook:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                webhook.received.append(json.loads(self.rfile.read(length)))
                self.send_response(webhook.status)
                self.end_headers()
                self.wfile.write(b"ok" if webhook.status < 300 else b"invalid_token")

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        return self

    @property
    def hook_url(self) -> str:
        return self.url + SECRET_PATH


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as server:
        yield server


def a_failed_run(**changes: Any) -> FailedRun:
    fields: dict[str, Any] = {
        "run_id": "0123456789abcdef",
        "job_name": "litellm_to_cloudzero",
        "first_hour": "2025-06-01-00:00",
        "last_hour": "2025-06-01-23:00",
        "failed_hours": ["2025-06-01-07:00"],
        "failed_checks": ["litellm_spend_logs.hour_checks (spend_and_tokens_valid)"],
        "error": "Execution of run failed.",
        "run_url": "http://dagster.example/runs/0123456789abcdef",
    }
    return FailedRun(**(fields | changes))


def test_the_message_names_run_hours_checks_and_link() -> None:
    text = alert_text(a_failed_run())
    assert "`01234567`" in text
    assert "2025-06-01-00:00 to 2025-06-01-23:00 UTC" in text
    assert "Failed hours (1): 2025-06-01-07:00" in text
    assert "litellm_spend_logs.hour_checks (spend_and_tokens_valid)" in text
    assert "<http://dagster.example/runs/0123456789abcdef|open it in Dagster>" in text
    assert "Error:" not in text  # the checks say more than Dagster's generic failure text


def test_a_crash_without_failed_checks_says_the_error() -> None:
    text = alert_text(a_failed_run(failed_hours=[], failed_checks=[], run_url=None))
    assert "Error: Execution of run failed." in text
    assert "open it in Dagster" not in text


def test_long_lists_are_cut() -> None:
    hours = [f"2025-06-01-{h:02d}:00" for h in range(24)] + ["2025-06-02-00:00"]
    assert "and 1 more" in alert_text(a_failed_run(failed_hours=hours))


def test_post_sends_slack_text(webhook: Webhook) -> None:
    post_alert(webhook.hook_url, "hello")
    assert webhook.received == [{"text": "hello"}]


def test_errors_never_name_the_webhook_url() -> None:
    with Webhook(status=403) as refusing, pytest.raises(AlertError) as refused:
        post_alert(refusing.hook_url, "hello")
    assert "HTTP 403" in str(refused.value)
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AlertError) as unreachable:
        post_alert(f"http://127.0.0.1:{port}{SECRET_PATH}", "hello", timeout_s=2)
    for error in (refused.value, unreachable.value):
        assert SECRET_PATH not in str(error)
        assert "secret-token" not in repr(error.__context__ or "")


def failed_job_run(database: str, lake: Path, instance: dg.DagsterInstance) -> dg.DagsterRun:
    write_to_postgres(database, HourWindow(HOURS[0], HOURS[-1] + HOUR), 6, seed=5)
    (bad_id,) = fetch_one(
        database,
        'SELECT request_id FROM "LiteLLM_SpendLogs" WHERE "startTime" >= '
        f"'{BAD:%Y-%m-%d %H:%M:%S}' AND \"startTime\" < '{BAD + HOUR:%Y-%m-%d %H:%M:%S}' "
        "AND status = 'success' ORDER BY request_id LIMIT 1",
    )
    execute(database, 'UPDATE "LiteLLM_SpendLogs" SET spend = -1 WHERE request_id = %s', (bad_id,))
    result = run_job(
        instance,
        lake,
        partition_key(HOURS[0]),
        partition_key(HOURS[-1]),
        database_url=database,
        unpriced_share_threshold=1.0,
    )
    assert not result.success
    return result.dagster_run


def sensor_context(
    instance: dg.DagsterInstance, run: dg.DagsterRun, resource: AlertWebhookResource
) -> dg.RunFailureSensorContext:
    failure = next(
        record.dagster_event
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        if record.dagster_event is not None
    )
    return dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources={"alert_webhook": resource},
    ).for_run_failure()


def test_a_failed_run_posts_one_message_naming_its_hour_and_checks(
    fresh_database: str, tmp_path: Path, webhook: Webhook
) -> None:
    resource = AlertWebhookResource(webhook_url=webhook.hook_url, ui_url="http://ui.example/")
    with dg.instance_for_test() as instance:
        run = failed_job_run(fresh_database, tmp_path, instance)
        alert_on_run_failure(sensor_context(instance, run, resource))
    assert len(webhook.received) == 1
    text = webhook.received[0]["text"]
    assert f"`{run.run_id[:8]}`" in text
    assert f"Failed hours (1): {partition_key(BAD)}" in text
    assert "litellm_spend_logs.hour_checks (spend_and_tokens_valid)" in text
    assert "cloudzero_billing_drops.every_hour_delivered" in text
    assert f"http://ui.example/runs/{run.run_id}" in text
    assert SECRET_PATH not in text


def test_without_a_webhook_nothing_is_sent(
    fresh_database: str, tmp_path: Path, webhook: Webhook
) -> None:
    with dg.instance_for_test() as instance:
        run = failed_job_run(fresh_database, tmp_path, instance)
        skipped = alert_on_run_failure(sensor_context(instance, run, AlertWebhookResource()))
    assert isinstance(skipped, dg.SkipReason)
    assert webhook.received == []
