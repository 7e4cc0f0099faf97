"""Arm policies: analytic target trackers for the SO-101 and Koch boards (build.py)."""
