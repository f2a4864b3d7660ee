#!/usr/bin/env bash
# Creates .venv with a Python >= 3.11 and installs adpipes (editable) with the pinned
# constraints, once; later calls only reinstall when pyproject.toml or constraints.txt change.
# constraints.txt is the lock either way. The installer is uv when it can be had (on PATH, or
# from the package index into .venv: a cold install takes ~15 s instead of ~2 minutes with pip),
# else pip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "adpipes needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

# The uv to install with: one on PATH, or one installed into .venv from the package index.
find_uv() {
  if [ -x .venv/bin/uv ]; then echo .venv/bin/uv; return 0; fi
  if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
  if .venv/bin/python -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1 &&
     [ -x .venv/bin/uv ]; then
    echo .venv/bin/uv; return 0
  fi
  return 1
}

install_with_uv() {
  local uv
  uv="$(find_uv)" || return 1
  local compile=()
  # Where Python writes no bytecode itself (PYTHONDONTWRITEBYTECODE, as on CI), compile it at
  # install as pip does: else every Dagster process compiles its imports again, seconds each.
  # Elsewhere the first process writes it, for the modules actually used.
  if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then compile=(--compile-bytecode); fi
  "$uv" pip install --quiet --python .venv/bin/python "${compile[@]}" -c constraints.txt -e '.[dev]'
}

install_with_pip() {
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.adpipes-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! install_with_uv; then
    echo "bootstrap: uv could not be had or failed; installing with pip (slower)" >&2
    install_with_pip
  fi
  echo "$want" > "$stamp"
fi
