"""Simulated cohorts with planted ground truth."""

from ._cohort import DEFAULT_AFFECTED_REGIONS, make_cohort

__all__ = ["DEFAULT_AFFECTED_REGIONS", "make_cohort"]
