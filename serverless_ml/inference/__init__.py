"""Batch inference: selecting new rows, scoring them, and the monitoring statistics
(accuracy windows, confusion matrices, drift, alerts) as plain functions."""
