"""A step waiting for a concurrency pool sleeps instead of spinning a CPU (Dagster 1.13.27).

Dagster's run worker loops ``get_next_step`` / ``sleep_til_ready`` while a step waits for a pool
slot. ``InstanceConcurrencyContext`` plans when to ask the database again (1 s, growing to 15 s),
but ``interval_to_next_pending_claim_check`` returns ``min([0, *waits])``, which is never above
0, so ``sleep_til_ready`` never sleeps: a run waiting for the ``cloudzero_api`` slot burnt most
of a core until it got it. The intended value is the time to the earliest planned check, not
below 0. Pools with run granularity would avoid the loop by queueing whole runs, but that
serializes the runs' extraction too, where only the upload must be one at a time.

The correction is installed once per process that loads the code location (``definitions.py``),
which includes every run worker.
"""

from __future__ import annotations

import time

from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext


def _interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
    """Seconds until the earliest pending claim may ask the database again (0 when none)."""
    waits = self._pending_timeouts.values()
    if not self._pending_claims or not waits:
        return 0.0
    return max(0.0, min(waits) - time.time())


def install() -> None:
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = (  # type: ignore[method-assign]
        _interval_to_next_pending_claim_check
    )
