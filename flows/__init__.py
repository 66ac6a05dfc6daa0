"""Prefect flows and deployments, and the ``seqlm`` command (``flows.cli``).

Importing this package sets nothing and imports neither Prefect nor MLflow: the entry points apply
the project's environment defaults first (``flows.settings``).
"""
