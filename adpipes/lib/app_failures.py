"""What a run says when one of several apps fails: a partition is written for every app or none.

A partition is one day of one table, and the tables hold every configured app (``app_id``, or
Airbridge's ``app_name``). The assets that call each app in turn (``appsflyer/daily_report``,
``appsflyer/cohort_ltv``, ``airbridge/revenue``) gather every app's rows before anything is
written, so one app's failure leaves the stored partitions as they were for all of them. The run
then fails with :func:`app_failure`, which names the app, what went wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg
from psycopg import sql

from adpipes.lib.storage.postgres import PostgresDatabase, stored_layout_version
from adpipes.lib.storage.tables import TableSpec


def partitions_label(partitions: Sequence[str]) -> str:
    """``partition 2026-11-20`` or ``partitions 2026-11-18..2026-11-20``."""
    keys = sorted(partitions)
    return f"partition {keys[0]}" if len(keys) == 1 else f"partitions {keys[0]}..{keys[-1]}"


def stored_partitions_kept(partitions: Sequence[str]) -> str:
    """``the stored partition keeps what it held`` (or the plural)."""
    return ("the stored partition keeps what it held" if len(set(partitions)) == 1
            else "the stored partitions keep what they held")


def app_failure(asset: str, partitions: Sequence[str], app: str, error: BaseException, *,
                apps: Sequence[str], calls: Mapping[str, int]) -> dg.Failure:
    """The step failure when ``app`` (one of ``apps``) failed and nothing was written; ``calls``
    holds the requests made this run per app that had answered before it (retries included)."""
    answered = ", ".join(f"{name} {count}" for name, count in calls.items())
    not_called = [name for name in apps if name not in calls and name != app]
    return dg.Failure(
        description=(
            f"{asset} {partitions_label(partitions)}: app {app} failed: {error}\n"
            f"Nothing of the {partitions_label(partitions)} was written, for any app: a partition holds "
            f"every configured app ({', '.join(apps)}) and is written for all of them or for none, so "
            f"{stored_partitions_kept(partitions)} for every app. The calls this run made were spent ("
            + (f"calls per app before the failure: {answered}; and " if answered else "")
            + f"app {app}'s own)"
            + (f"; not called: {', '.join(not_called)}" if not_called else "")
            + ". What to do: re-run the partitions once the cause above is fixed or has passed "
            "(a re-run calls every app again)."
        ),
        metadata={
            "failed_app": app,
            "apps": dg.MetadataValue.json(list(apps)),
            "calls_by_app_before_the_failure": dg.MetadataValue.json(dict(calls)),
            "partitions": dg.MetadataValue.json(sorted(partitions)),
        },
    )


def stored_apps_not_configured(archive: PostgresDatabase, spec: TableSpec, app_column: str,
                               days: Sequence[str], apps: Sequence[str]) -> list[str]:
    """Values of ``app_column`` (an app, or any source of rows such as a report) archived in
    ``spec``'s table for ``days`` that are not in ``apps`` (removed from the settings): replacing
    those days would drop their rows. None while the table does not exist or has an older layout."""
    with archive.connect() as conn:
        version = stored_layout_version(conn, spec)
        if version is None or version < spec.layout_version:
            conn.rollback()
            return []
        rows = conn.execute(
            sql.SQL("SELECT DISTINCT {} FROM {} WHERE report_date = ANY(%s::date[]) AND NOT {} = ANY(%s)").format(
                sql.Identifier(app_column), sql.Identifier(spec.schema_name, spec.table_name),
                sql.Identifier(app_column)),
            (list(days), list(apps)),
        ).fetchall()
        conn.rollback()
    return sorted(r[0] for r in rows)


def refuse_removed_apps(asset: str, partitions: Sequence[str], removed: Sequence[str], variables: str) -> None:
    """Fail before any call when the archive holds rows of apps no longer configured for the
    partitions: a partition is replaced as a whole, and no re-pull may leave the archive with less."""
    if not removed:
        return
    raise dg.Failure(
        f"{asset} {partitions_label(partitions)}: the archive holds rows of app(s) {', '.join(removed)} for "
        f"these days, which are no longer configured ({variables}). A partition is replaced as a whole, "
        "so pulling it again would drop their rows from both databases; nothing was called or written. "
        "What to do: add the app(s) back to the settings and re-run, or materialize only days after "
        "the app was removed.",
        metadata={"apps_no_longer_configured": dg.MetadataValue.json(list(removed))},
    )
