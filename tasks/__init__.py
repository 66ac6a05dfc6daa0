"""Prefect tasks: each a thin wrapper around one library call, or a tracking step.

Importing this package sets nothing: the project's environment defaults are applied by the entry
points (``flows.settings.apply_defaults``) before Prefect or MLflow is imported.
"""
