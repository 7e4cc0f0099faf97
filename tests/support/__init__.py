"""Helpers shared by tests (never imported from another test file)."""
