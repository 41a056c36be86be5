"""Error kinds that decide what the orchestrator does next.

A ``PermanentError`` will fail the same way on every retry (a wrong inventory, a file the
portal refuses with 4xx, a pending migration): Airflow fails the task at once instead of
retrying. Everything else is treated as transient and retried with backoff.
"""


class PermanentError(Exception):
    """Retrying cannot help; a person has to act (the message says what)."""
