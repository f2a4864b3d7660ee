"""Mutation testing of the modules that guard data (run it as ./scripts/mutation).

mutmut (configured in pyproject.toml, [tool.mutmut]) copies the package and the tests into
./mutants, changes the guarded modules one small edit at a time and runs, for each edit (mutant),
the tests of the selection that call the changed function. A mutant no test notices "survived".

This driver starts one throwaway PostgreSQL cluster for the whole run (the tests find it through
ADPIPES_TEST_PRODUCT_DSN / ADPIPES_TEST_ARCHIVE_DSN instead of starting a cluster per mutant), runs
mutmut on each module in turn with one test process at a time (the machine is shared), and prints
killed / survived / total per module and every surviving mutant. ``--report`` prints the figures
of the last runs without running anything.

    ./scripts/mutation                                # every module, smallest first
    ./scripts/mutation appsflyer/transform.py         # one module
    ./scripts/mutation lib/storage/locks.py           # one file of a package module
    ./scripts/mutation --resume lib/storage           # only the mutants not killed yet (unchecked,
                                                      # survivors, timeouts): after new tests or a stop
    ./scripts/mutation --survivors lib/quality        # only the mutants checked and not killed
                                                      # (survived, timed out): after new tests
    ./scripts/mutation --report                       # figures of the runs so far
    .venv/bin/mutmut show <mutant name>               # the edit a survivor made
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"

# Module (as in the docs) -> the mutmut name prefix of its mutants. Smallest first.
MODULES = {
    "airbridge/transform.py": "adpipes.airbridge.transform.",
    "appsflyer/transform.py": "adpipes.appsflyer.transform.",
    "lib/retention.py": "adpipes.lib.retention.",
    "lib/quota.py": "adpipes.lib.quota.",
    "lib/quality": "adpipes.lib.quality.",
    "lib/storage": "adpipes.lib.storage.",
}
# mutmut's statuses that mean no test noticed the mutant. "no tests": no test of the selection
# calls the function at all, which is no better than surviving.
NOT_KILLED = ("survived", "no tests")


def owning_module(path: str) -> str | None:
    """The module of MODULES that ``path`` (a module, or a file inside a package module) belongs to."""
    return next((m for m in MODULES if path == m or path.startswith(m + "/")), None)


def mutant_prefix(path: str) -> str:
    """The mutmut name prefix of the mutants of ``path``."""
    return MODULES.get(path) or "adpipes." + path.removesuffix(".py").replace("/", ".") + "."


def module_of(mutant: str) -> str | None:
    for module, prefix in MODULES.items():
        if mutant.startswith(prefix):
            return module
    return None


def results() -> dict[str, dict[str, str]]:
    """module -> {mutant name: status} from mutmut's record of the runs so far."""
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"mutmut results failed:\n{out.stdout}{out.stderr}")
    by_module: dict[str, dict[str, str]] = defaultdict(dict)
    for line in out.stdout.splitlines():
        found = re.match(r"\s+(\S+): (.+)$", line)
        if found and module_of(found.group(1)):
            by_module[module_of(found.group(1))][found.group(1)] = found.group(2).strip()
    return by_module


def report(modules: list[str]) -> int:
    """Print the figures and the survivors of ``modules``; the number of modules above 10 %."""
    by_module = results()
    over = 0
    print(f"\n{'module':<24}{'killed':>8}{'survived':>10}{'no tests':>10}{'other':>7}{'total':>7}{'survived %':>12}")
    for module in modules:
        statuses = Counter(by_module.get(module, {}).values())
        total = sum(statuses.values())
        checked = total - statuses["not checked"]
        not_killed = sum(statuses[s] for s in NOT_KILLED)
        other = checked - statuses["killed"] - not_killed
        share = 100.0 * not_killed / checked if checked else 0.0
        over += share > 10
        note = "" if checked == total else f"  ({total - checked} not checked yet)"
        print(f"{module:<24}{statuses['killed']:>8}{statuses['survived']:>10}{statuses['no tests']:>10}"
              f"{other:>7}{checked:>7}{share:>11.1f}%{note}")
    for module in modules:
        survivors = sorted(name for name, status in by_module.get(module, {}).items() if status in NOT_KILLED)
        if survivors:
            print(f"\nsurviving in {module} (see: .venv/bin/mutmut show <name>):")
            for name in survivors:
                print(f"  {name}  [{by_module[module][name]}]")
    others = Counter(s for m in modules for s in by_module.get(m, {}).values()
                     if s not in ("killed", "not checked", *NOT_KILLED))
    if others:
        print("\nother outcomes (timeout and suspicious count as not killed by a failing assertion):",
              dict(others))
    return over


def start_postgres() -> tuple[object, Path] | None:
    """One cluster for the run, published to the tests; None when the DSN variables are set."""
    if os.environ.get("ADPIPES_TEST_PRODUCT_DSN") and os.environ.get("ADPIPES_TEST_ARCHIVE_DSN"):
        return None
    sys.path.insert(0, str(ROOT))
    from adpipes.dev.postgres_server import PostgresCluster
    from adpipes_tests.fixtures.postgres import TEST_SERVER_OPTIONS

    root = Path(tempfile.mkdtemp(prefix="adpipes-mutation-pg-"))
    root.chmod(0o755)  # the unprivileged server user must traverse it when we run as root
    cluster = PostgresCluster(root / "cluster", server_options=TEST_SERVER_OPTIONS)
    cluster.ensure_running()
    for name, variable in (("product", "ADPIPES_TEST_PRODUCT_DSN"), ("archive", "ADPIPES_TEST_ARCHIVE_DSN")):
        cluster.create_database(name)
        os.environ[variable] = cluster.dsn(name)
    return cluster, root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"modules to mutate (default: all): {', '.join(MODULES)}")
    parser.add_argument("--report", action="store_true", help="print the figures of the runs so far, run nothing")
    parser.add_argument("--resume", action="store_true",
                        help="run only the mutants mutmut's record does not show killed (not checked yet, "
                             "survived, timed out); a module with no record yet runs whole")
    parser.add_argument("--survivors", action="store_true",
                        help="run only the mutants mutmut's record shows checked and not killed (survived, "
                             "timed out, no tests), not the ones never checked: what new tests can change")
    args = parser.parse_args()
    modules = args.modules or list(MODULES)
    # A file inside a package module (lib/storage/locks.py) runs that file's mutants only.
    unknown = [m for m in modules if owning_module(m) is None]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")
    os.chdir(ROOT)
    reported = list(dict.fromkeys(owning_module(m) for m in modules))
    if args.report:
        return 1 if report(reported) else 0
    # The property tests run 4 examples each per mutant (their default is more): a mutant that
    # changes a rule shows on most inputs, and each mutant reruns every test that calls its function.
    os.environ.setdefault("PROPERTY_TEST_EXAMPLES", "4")
    started = start_postgres()
    recorded = results() if args.resume or args.survivors else {}
    # Statuses --survivors leaves out: killed, and never checked (--resume runs those too).
    skipped = {"killed", "not checked"} if args.survivors else {"killed"}
    try:
        for module in modules:
            # mutmut reruns every mutant it is given by name, killed or not; --resume names only the
            # ones its record does not show killed, so a stopped run or new tests cost only those.
            prefix, owner = mutant_prefix(module), owning_module(module)
            names = sorted(name for name, status in recorded.get(owner, {}).items()
                           if status not in skipped and name.startswith(prefix))
            if (args.resume or args.survivors) and any(n.startswith(prefix) for n in recorded.get(owner, {})) and not names:
                print(f"== mutmut: {module}: no recorded mutant to re-run", flush=True)
                continue
            print(f"== mutmut: {module}" + (f" (resuming {len(names)} mutants)" if names else ""), flush=True)
            # One test process at a time: the machine is shared.
            run = subprocess.run([str(MUTMUT), "run", "--max-children", "1", *(names or [prefix + "*"])],
                                 cwd=ROOT)
            if run.returncode != 0:
                print(f"mutmut stopped on {module} (exit {run.returncode}); see its output above", flush=True)
                return run.returncode
    finally:
        if started is not None:
            cluster, root = started
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
    return 1 if report(reported) else 0


if __name__ == "__main__":
    sys.exit(main())
