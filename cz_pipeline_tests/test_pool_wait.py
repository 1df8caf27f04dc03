"""A run waiting for the cloudzero_api pool sleeps between claims instead of spinning a CPU."""

from __future__ import annotations

import dagster as dg
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

import cz_pipeline.definitions  # noqa: F401  (loading the code location installs the correction)

POOL = "cloudzero_api"


def test_a_step_blocked_by_the_pool_waits_until_its_next_claim() -> None:
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        holder = instance.create_run_for_job(dg.GraphDefinition("holder").to_job())
        waiter = instance.create_run_for_job(dg.GraphDefinition("waiter").to_job())
        with (
            InstanceConcurrencyContext(instance, holder) as holding,
            InstanceConcurrencyContext(instance, waiter) as waiting,
        ):
            assert holding.claim(POOL, "cloudzero_billing_drops")
            assert not waiting.claim(POOL, "cloudzero_billing_drops")
            # Dagster 1.13.27 answered 0 here, so its executor loop never slept.
            assert 0.5 < waiting.interval_to_next_pending_claim_check() <= 15
            assert not waiting.claim(POOL, "cloudzero_billing_drops")  # not yet: no DB query
            holding.free_step("cloudzero_billing_drops")
        assert instance.event_log_storage.get_concurrency_info(POOL).active_slot_count == 0


def test_nothing_pending_means_no_wait() -> None:
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("idle").to_job())
        with InstanceConcurrencyContext(instance, run) as context:
            assert context.interval_to_next_pending_claim_check() == 0.0
