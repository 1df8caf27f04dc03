"""Failed runs reach people: one message per failed run to a Slack-compatible webhook."""

from __future__ import annotations

import dagster as dg

from cz_pipeline.lib.alerts import FailedRun, alert_text, post_alert

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"


class AlertWebhookResource(dg.ConfigurableResource):
    """``CZ_ALERT_WEBHOOK_URL`` (a secret, passed as EnvVar) and ``CZ_DAGSTER_UI_URL``."""

    webhook_url: str | None = None
    ui_url: str | None = None

    def run_url(self, run_id: str) -> str | None:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if self.ui_url else None


def failed_run(context: dg.RunFailureSensorContext, ui: AlertWebhookResource) -> FailedRun:
    """The run's hours and the hours and checks that failed, from its check evaluations; a
    per-hour check names the rules that failed."""
    run = context.dagster_run
    evaluations = [
        record.asset_check_evaluation
        for record in context.instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        if record.dagster_event is not None
    ]
    failed = [e for e in evaluations if e is not None and not e.passed]
    hours = {e.partition for e in failed if e.partition}
    for evaluation in failed:
        listed = evaluation.metadata.get("failed_hours")
        if listed is not None and isinstance(listed.value, str):
            hours |= {h.strip() for h in listed.value.split(",") if h.strip()}
    rules: dict[str, set[str]] = {}
    for evaluation in failed:
        named = rules.setdefault(
            f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}", set()
        )
        listed = evaluation.metadata.get("failed_rules")
        if listed is not None and isinstance(listed.value, str):
            named |= {r.strip() for r in listed.value.split(",") if r.strip()}
    checks = [
        f"{name} ({', '.join(sorted(rules[name]))})" if rules[name] else name
        for name in sorted(rules)
    ]
    first = run.tags.get(RANGE_START) or run.tags.get(PARTITION)
    return FailedRun(
        run_id=run.run_id,
        job_name=run.job_name,
        first_hour=first,
        last_hour=run.tags.get(RANGE_END) or first,
        failed_hours=sorted(hours),
        failed_checks=checks,
        error=context.failure_event.message,
        run_url=ui.run_url(run.run_id),
    )


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one message per failed run (a held-back or undelivered hour, a crash) to "
    "CZ_ALERT_WEBHOOK_URL, a Slack-compatible incoming webhook, naming the run, the failed "
    "hours and checks, with a link to the run (CZ_DAGSTER_UI_URL). Does nothing when the "
    "webhook is not set.",
)
def alert_on_run_failure(
    context: dg.RunFailureSensorContext, alert_webhook: AlertWebhookResource
) -> dg.SkipReason | None:
    if not alert_webhook.webhook_url:
        return dg.SkipReason("CZ_ALERT_WEBHOOK_URL is not set")
    run = failed_run(context, alert_webhook)
    post_alert(alert_webhook.webhook_url, alert_text(run))
    context.log.info(f"alert sent for run {run.run_id}")
    return None
