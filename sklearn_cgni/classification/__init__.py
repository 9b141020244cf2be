"""Subpackage (filled in by its estimators)."""
