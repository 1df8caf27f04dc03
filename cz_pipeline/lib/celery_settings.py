"""Where steps go when Celery workers run them: the broker and the result backend.

Both URLs may hold a password, so the executor's run configuration names the environment
variables instead of holding their values, and a worker reads the same variables in its own
environment. One rule gives both sides the same broker and backend.
"""

from __future__ import annotations

from collections.abc import Mapping

BROKER_VARIABLE = "CZ_CELERY_BROKER_URL"
BACKEND_VARIABLE = "CZ_CELERY_BACKEND_URL"
# Results travel back as broker messages: nothing else to run, for RabbitMQ and Redis alike.
DEFAULT_BACKEND = "rpc://"

ConfigValue = str | dict[str, str]


class CelerySettingsError(ValueError):
    """The Celery executor or a worker is asked for without a broker to reach."""


def celery_enabled(env: Mapping[str, str]) -> bool:
    """Steps run on Celery workers when a broker is configured, in-process otherwise."""
    return bool(env.get(BROKER_VARIABLE, "").strip())


def executor_config(env: Mapping[str, str]) -> dict[str, ConfigValue]:
    """``celery_executor`` config that refers to the variables, so no URL lands in a run."""
    if not celery_enabled(env):
        raise CelerySettingsError(f"{BROKER_VARIABLE} is not set: there is no broker to use")
    backend: ConfigValue = (
        {"env": BACKEND_VARIABLE} if env.get(BACKEND_VARIABLE, "").strip() else DEFAULT_BACKEND
    )
    return {"broker": {"env": BROKER_VARIABLE}, "backend": backend}


def worker_config(env: Mapping[str, str]) -> dict[str, str]:
    """The same broker and backend as the executor's, resolved in the worker's environment."""
    return {
        key: env[value["env"]].strip() if isinstance(value, dict) else value
        for key, value in executor_config(env).items()
    }
