"""Partitions of the analysis assets: one per day in the app timezone, like their inputs' (so each
day of an analysis table is derived from the same day of its inputs)."""

from adpipes.lib.partitions import daily_partitions
from adpipes.lib.settings import load_settings

analytics_daily_partitions = daily_partitions(load_settings())
