"""Shared fixtures: a real PostgreSQL server and the sandbox APIs over real HTTP on 127.0.0.1."""

import os

from adpipes.lib.settings import DEFAULT_START_DATE

# Dev mode's partitions start three weeks ago, but the suite materializes days up to ~120 days
# back (AppsFlyer's 90-day lookback, retention): it keeps production's first partition, set before
# any adpipes module builds its partitions. adpipes_tests/lib/test_settings.py covers dev's default.
os.environ.setdefault("ADPIPES_START_DATE", DEFAULT_START_DATE)

from adpipes_tests.fixtures.postgres import *  # noqa: F401,F403
from adpipes_tests.fixtures.sandbox import *  # noqa: F401,F403
