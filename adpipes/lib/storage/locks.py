"""One writer per asset partition: a run that would write a partition another run is writing
stops before it calls any vendor API.

Two runs of one partition (a backfill and the scheduled run of the same day, or a partition
launched twice from the UI) would both call the vendor, spending its small daily quota twice, and
race to replace the partition. Each table asset's step therefore holds a PostgreSQL session-level
advisory lock per partition it writes, in the archive database, from its first line until its
output is stored. The second run fails at once, naming the run that holds the partition (from the
lock holder's ``application_name``); re-run it when that run is done. A refused or finished
writer unlocks at once; a killed run's locks go when its connection ends, so it never leaves a
partition locked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg
import psycopg

from adpipes.lib.storage.postgres import PostgresDatabase

APPLICATION_PREFIX = "adpipes writer "


def lock_name(asset_key: dg.AssetKey, partition_key: str) -> str:
    return f"adpipes:write:{asset_key.to_user_string()}:{partition_key}"


class PartitionBusy(dg.Failure):
    """Another run holds one of the partitions; nothing was called or written."""


@contextmanager
def partition_write_lock(archive: PostgresDatabase, asset_key: dg.AssetKey, partition_keys: Sequence[str],
                         run_id: str) -> Iterator[None]:
    """Hold the write locks of ``partition_keys`` of ``asset_key`` for the block, or fail at once
    (:class:`PartitionBusy`) naming the run that holds one."""
    keys = sorted(set(partition_keys))
    with archive.connect() as conn:
        conn.autocommit = True
        # The holder is named in pg_stat_activity for a waiting run's message.
        conn.execute("SELECT set_config('application_name', %s, false)", (f"{APPLICATION_PREFIX}{run_id}",))
        try:
            for key in keys:
                (taken,) = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                        (lock_name(asset_key, key),)).fetchone()
                if not taken:
                    holder = _holder(conn, asset_key, key)
                    raise PartitionBusy(
                        description=(
                            f"{asset_key.to_user_string()} partition {key} is being written by "
                            f"{holder}; this run stopped before calling any vendor API or writing "
                            "anything (two runs of one partition would spend the vendor's quota "
                            "twice and race to replace it). Re-run the partition when that run is done."
                        ),
                        metadata={"busy_partition": key, "held_by": holder},
                    )
            yield
        finally:
            _release(conn)


def _release(conn: psycopg.Connection) -> None:
    """Free this session's locks now, refused or done: closing the connection frees them only when
    its server process exits, which can lag behind the next run's attempt. On a connection that
    broke during the block the unlock fails; the block's own error is the one raised, and the
    locks go with the server process."""
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT pg_advisory_unlock_all()")


def _holder(conn, asset_key: dg.AssetKey, key: str) -> str:
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)",
        (lock_name(asset_key, key),),
    ).fetchone()
    name = row[0] if row else ""
    return f"run {name.removeprefix(APPLICATION_PREFIX)}" if name.startswith(APPLICATION_PREFIX) else "another run"
