"""Prefect flows and deployments; ``tasks`` is imported first for the project's settings."""

import tasks  # noqa: F401
