"""Refine steps. Files: merge fragments, detect the interval, fill gaps, write ETC files."""
