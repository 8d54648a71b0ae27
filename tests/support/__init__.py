"""Helpers shared by the test folders (no test module imports another; they import from here)."""
