"""A failed run, said in one message to a Slack-compatible incoming webhook.

The webhook URL is a secret (whoever holds it can post to the channel), so it never appears in
an error message, a log line or the message itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

MAX_ERROR_CHARS = 500
MAX_LISTED = 24


class AlertError(RuntimeError):
    """The webhook did not take the message; says why without naming the URL."""


@dataclass(frozen=True)
class FailedRun:
    """What a person needs to act on a failed run."""

    run_id: str
    job_name: str
    first_hour: str | None
    last_hour: str | None
    failed_hours: Sequence[str]
    failed_checks: Sequence[str]
    error: str | None
    run_url: str | None


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def alert_text(run: FailedRun) -> str:
    """The message: the run, its hours, what failed, and a link to it."""
    hours = (
        f" over {run.first_hour} to {run.last_hour} UTC"
        if run.first_hour and run.last_hour and run.first_hour != run.last_hour
        else (f" for {run.first_hour} UTC" if run.first_hour else "")
    )
    lines = [
        f":rotating_light: cz-pipeline run `{run.run_id[:8]}` of `{run.job_name}`{hours} failed."
    ]
    if run.failed_hours:
        lines.append(f"Failed hours ({len(run.failed_hours)}): {_listed(run.failed_hours)}")
    if run.failed_checks:
        lines.append(f"Failed checks: {_listed(run.failed_checks)}")
    if run.error and not (run.failed_hours or run.failed_checks):
        lines.append(f"Error: {run.error[:MAX_ERROR_CHARS]}")
    if run.run_url:
        lines.append(f"Run: <{run.run_url}|open it in Dagster>")
    return "\n".join(lines)


def post_alert(webhook_url: str, text: str, *, timeout_s: float = 10.0) -> None:
    """POST ``{"text": ...}`` once; raise :class:`AlertError` (without the URL) on failure."""
    try:
        response = httpx.post(webhook_url, json={"text": text}, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise AlertError(
            f"the alert webhook could not be reached ({type(error).__name__})"
        ) from None
    if response.status_code >= 300:
        raise AlertError(
            f"the alert webhook answered HTTP {response.status_code}: {response.text[:200]}"
        )
