"""The README and docs/ say what works: the README stays short, every relative link resolves, and
every shell command in a fenced block runs as written, here, against a dev instance of its own
(embedded PostgreSQL, the sandbox, a temporary DAGSTER_HOME), or is listed below with the reason it
cannot. A new command block fails ``test_every_command_block_is_run_or_listed`` until it is one or
the other."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from adpipes.dev.services import ensure_postgres, stop_all
from adpipes.lib.settings import SANDBOX_ANDROID_APP_ID, Settings, load_settings
from adpipes_tests.fixtures.postgres import make_test_dir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell"}

# Issue 14: "The README, at most 10,000 characters".
README_LIMIT = 10_000

# Shell blocks run for real by test_the_documented_commands_run_as_written, in this order (each
# needs what the ones before it did: the raw reports before raw_data, the services last).
RUN = [
    ("docs/operations.md", "day=$(TZ=Asia/Seoul date -d yesterday +%F)"),
    ("docs/development.md", ".venv/bin/python -m adpipes.dev.services status"),
]
# Shell blocks that cannot run in a test, and why.
NOT_RUN = {
    ("README.md", "./scripts/dev"):
        "starts a server that runs until stopped; the block's other command, ./scripts/test, is the "
        "suite this test is part of. test_the_readme_commands_are_the_scripts_ci_runs checks both "
        "exist and that .ci/run calls ./scripts/test; what scripts/dev runs is tested piece by piece "
        "(adpipes_tests/dev/test_seed.py, test_services.py) and its selection examples here",
    ("docs/configuration.md", "export ADPIPES_ENV=prod"):
        "needs real AppsFlyer and Airbridge credentials and databases, and ends in `dagster dev`, a "
        "server; prod mode against the sandbox is what test_daemon.py and test_topology.py run",
    ("docs/operations.md", "useradd --system --home-dir /opt/adpipes --shell /usr/sbin/nologin adpipes"):
        "installs systemd units as root on a machine with systemd as PID 1 (not here); the units "
        "are checked in test_topology.py",
    ("docs/operations.md", "docker build -f deploy/Dockerfile -t registry.example.com/adpipes:<tag> . && docker push ..."):
        "needs Docker, a registry and a Kubernetes cluster (none here); the values are checked in "
        "test_topology.py",
    ("docs/archive-safety.md", 'psql "$ADPIPES_ARCHIVE_DSN" -AtX \\'):
        "reads the reader's own refused delivery (id 42); getting a delivery back is tested in "
        "adpipes_tests/appsflyer/test_assets.py",
    ("docs/archive-safety.md", "dagster asset materialize -m adpipes.definitions --select appsflyer/android_installs \\"):
        "replaces a day the reader's archive refused, on a date of theirs; replace_archived is "
        "tested in adpipes_tests/appsflyer/test_assets.py",
    ("docs/retention.md", "Q=\"SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1;"):
        "a template: <columns> is filled in by the reader from the failed prune's metadata",
}
# SQL blocks run against the dev instance after the commands, with the database each names.
SQL = {
    "docs/checks.md": "archive",
    "docs/assets.md": "product",
}


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of a Markdown file."""
    blocks, language, lines = [], None, []
    for line in path.read_text().splitlines():
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and language is None:
            language, lines = fence.group(1), []
        elif fence:
            blocks.append((language, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"{path}: a fenced block is not closed"
    return blocks


def shell_blocks() -> dict[tuple[str, str], str]:
    """Every shell block of the README and docs/, keyed by (file, its first line)."""
    found = {}
    for path in DOCUMENTS:
        for language, text in fenced_blocks(path):
            if language in SHELL:
                first = re.sub(r"\s+#.*$", "", text.strip().splitlines()[0])  # without its comment
                found[(str(path.relative_to(ROOT)), first)] = text
    return found


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings, in_code = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"^#{1,6}\s+(.*)$", line)):
            headings.append(github_anchor(match.group(1)))
    return set(headings)


def test_the_readme_is_at_most_10000_characters() -> None:
    assert len(README.read_text(encoding="utf-8")) <= README_LIMIT


def test_every_relative_link_resolves() -> None:
    checked, broken = 0, []
    for path in DOCUMENTS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code is not a link
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert checked > 30  # the links were found
    assert broken == []


def test_the_readme_links_every_docs_topic_and_shows_the_lineage() -> None:
    # Issue 14: links to configuration, operations, checks, vendors, development; a lineage screenshot.
    text = README.read_text()
    for page in ("configuration", "operations", "checks", "vendors", "development", "analytics"):
        assert f"(docs/{page}.md)" in text, page
    assert "![" in text and "(docs/images/lineage.png)" in text
    for key in ("analytics/cohort_roas", "analytics/media_source_daily", "appsflyer/raw_data"):
        assert f"| `{key}` |" in text, key


def test_the_readme_commands_are_the_scripts_ci_runs() -> None:
    (block,) = [text for (name, _), text in shell_blocks().items() if name == "README.md"]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["./scripts/dev", "./scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert ci == ["./scripts/test"]  # exactly the README's test command, nothing else


def test_every_command_block_is_run_or_listed() -> None:
    blocks = set(shell_blocks())
    unaccounted = blocks - set(RUN) - set(NOT_RUN)
    assert unaccounted == set(), "run these in test_the_documented_commands_run_as_written or list them in NOT_RUN"
    # A listed block that no longer exists would hide a changed one.
    assert (set(RUN) | set(NOT_RUN)) - blocks == set()


@pytest.fixture
def dev_instance(tmp_path) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A dev instance of its own, as scripts/dev sets one up: its data directory (embedded
    PostgreSQL and sandbox, started by the first command that needs them) and DAGSTER_HOME with
    the dev instance settings."""
    directory = make_test_dir("adpipes-test-readme-")
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "config" / "dagster.dev.yaml", dagster_home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADPIPES_", "APPSFLYER_", "AIRBRIDGE_", "DAGSTER_"))}
    env.update(
        ADPIPES_ENV="dev", ADPIPES_DATA_DIR=str(directory), DAGSTER_HOME=str(dagster_home),
        # Two raw reports instead of ten: the same commands, a third of the steps (each step
        # is a process of its own), so the range run takes a minute rather than ten.
        APPSFLYER_RAW_REPORTS="installs_report,in_app_events_report",
    )
    settings = load_settings({k: v for k, v in env.items() if k.startswith(("ADPIPES_", "APPSFLYER_"))})
    yield settings, env
    stop_all(settings)
    shutil.rmtree(directory, ignore_errors=True)


def run_block(block: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_the_documented_commands_run_as_written(dev_instance) -> None:
    settings, env = dev_instance
    blocks = shell_blocks()
    # The days the operations block computes, computed here by hand (app timezone, Asia/Seoul).
    today = dt.datetime.now(ZoneInfo("Asia/Seoul")).date()
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    range_days = [(today - dt.timedelta(days=n)).isoformat() for n in (3, 2, 1)]

    done = run_block(blocks[RUN[0]], env)
    assert done.returncode == 0, done.stderr[-4000:]
    with psycopg.connect(ensure_postgres(settings).product_dsn) as conn:
        def days(table: str) -> list[str]:
            return [d for (d,) in conn.execute(f"SELECT DISTINCT report_date::text FROM {table} ORDER BY 1")]
        # raw_data alone for yesterday, then the key:"appsflyer/*" range over the three days.
        assert days("appsflyer.raw_data") == range_days
        assert days("appsflyer.daily_report") == range_days
        assert days("airbridge.revenue") == [yesterday]
        assert conn.execute("SELECT count(*) FROM appsflyer.customer_user_map").fetchone()[0] > 0

    # The SQL the docs print, against the tables those runs filled.
    postgres = ensure_postgres(settings)
    dsns = {"product": postgres.product_dsn, "archive": postgres.archive_dsn}
    for name, database in SQL.items():
        statements = [text for language, text in fenced_blocks(ROOT / name) if language == "sql"]
        assert statements, name
        with psycopg.connect(dsns[database]) as conn:
            for statement in statements:
                params = {"app_id": SANDBOX_ANDROID_APP_ID, "customer_user_id": 1} if "%(" in statement else None
                conn.execute(statement, params)

    # The services block: status finds both services running, down stops them.
    done = run_block(blocks[RUN[1]], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ADPIPES_PRODUCT_DSN=" in done.stdout and "sandbox:  running at http://127.0.0.1:" in done.stdout
    assert "stopped postgres and sandbox" in done.stdout
    status = subprocess.run([".venv/bin/python", "-m", "adpipes.dev.services", "status"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 3, status.stdout  # documented: exit 3 when one is not running


def test_a_bare_key_prefix_selection_fails_as_the_docs_say(dev_instance) -> None:
    """operations.md says a bare `appsflyer/*` is read as the key `appsflyer/` and fails, and
    that `key:"appsflyer/*"` is the form that works (the form the block above runs)."""
    _, env = dev_instance
    yesterday = (dt.datetime.now(ZoneInfo("Asia/Seoul")).date() - dt.timedelta(days=1)).isoformat()
    done = subprocess.run([".venv/bin/dagster", "asset", "materialize", "-m", "adpipes.definitions",
                           "--select", "appsflyer/*", "--partition", yesterday],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "['appsflyer/']" in done.stderr
