"""The Celery app a worker runs: ``dagster-celery worker start -A cz_pipeline.celery_worker``.

It is ``dagster_celery.app`` with the broker and backend read from ``CZ_CELERY_BROKER_URL`` and
``CZ_CELERY_BACKEND_URL`` in the worker's environment, by the rule the executor uses. Passing
them with ``-y <yaml>`` instead would make dagster-celery write the URLs, passwords included,
into a Python file under ``$DAGSTER_HOME``.

The code location is loaded here, once, before Celery forks its pool, so a step does not pay
for importing and building it in every new worker process.
"""

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from cz_pipeline.definitions import defs
from cz_pipeline.lib.celery_settings import worker_config

defs()

app = make_app(CeleryExecutor.for_cli(**worker_config(os.environ)).app_args())
execute_plan = create_task(app)
