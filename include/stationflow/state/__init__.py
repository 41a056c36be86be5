"""PostgreSQL state: the embedded server, migrations, connections, ledger and audit log."""
