"""Partitions of the AppsFlyer assets: one per day in the app timezone."""

from adpipes.lib.partitions import daily_partitions
from adpipes.lib.settings import load_settings

appsflyer_daily_partitions = daily_partitions(load_settings())
