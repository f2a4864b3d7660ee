"""Data quality from pandera schemas: rules grouped into asset checks, validation before product
is written, quarantine and failure cases in the archive database."""

from adpipes.lib.quality.checks import publish, quality_check_specs
from adpipes.lib.quality.rules import (
    ARCHIVED_ROWS,
    ERROR,
    REQUIRED_COLUMNS,
    REQUIRED_VALUES,
    ROW_VOLUME,
    UNIQUE_KEYS,
    UNKNOWN_COLUMNS,
    WARN,
    CheckGroup,
    check_groups,
    rule,
)
from adpipes.lib.quality.store import QualityStore, RejectedDelivery
from adpipes.lib.quality.validation import QualityReport, find_failures, header_failures

__all__ = [
    "ARCHIVED_ROWS", "ERROR", "REQUIRED_COLUMNS", "REQUIRED_VALUES", "ROW_VOLUME", "UNIQUE_KEYS", "UNKNOWN_COLUMNS",
    "WARN", "CheckGroup", "QualityReport", "QualityStore", "RejectedDelivery", "check_groups", "find_failures",
    "header_failures", "publish", "quality_check_specs", "rule",
]
