"""Shared fixtures: a real PostgreSQL server and the sandbox APIs over real HTTP on 127.0.0.1."""

from adpipes_tests.fixtures.postgres import *  # noqa: F401,F403
from adpipes_tests.fixtures.sandbox import *  # noqa: F401,F403
