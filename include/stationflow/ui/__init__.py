"""The web views stationflow adds to the Airflow UI (mounted by plugins/)."""
