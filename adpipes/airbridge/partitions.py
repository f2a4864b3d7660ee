"""Partitions of the Airbridge assets: one per cohort (install) day in the app timezone."""

from adpipes.lib.partitions import daily_partitions
from adpipes.lib.settings import load_settings

airbridge_daily_partitions = daily_partitions(load_settings())
