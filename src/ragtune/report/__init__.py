"""The run report: one data object built from the run directory, rendered as JSON, markdown (and HTML)."""

from ragtune.report.data import build_report_data, load_report_data
from ragtune.report.render import write_report

__all__ = ["build_report_data", "load_report_data", "write_report"]
