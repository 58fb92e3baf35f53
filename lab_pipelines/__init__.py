"""The lab itself: plain Python and torch, one subpackage per reproduced paper.

Nothing in this package imports Dagster; `assets_defs` wraps these functions as assets.
"""
