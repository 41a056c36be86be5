"""Refine steps of the record chain (Smart Emission): raw sensor hours -> hourly indicator
values (definitions as data, converters, calibration, aggregation, last values)."""
