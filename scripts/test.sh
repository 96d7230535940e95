#!/usr/bin/env bash
# The one test command (README.md, CI): installs everything the tests need from the
# package registries, builds the labextension, and runs every suite. Fails if any part
# cannot run; no suite is skipped for lack of a tool.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
  [ -n "$APT_UPDATED" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x /usr/bin/chromium ]; then
  step "installing chromium for the browser tests"
  apt_install chromium
fi

if ! command -v java >/dev/null; then
  step "installing a Java runtime for the PySpark tests (local mode)"
  apt_install default-jre-headless
fi

step "python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip
# -e builds the labextension too (hatch-jupyter-builder runs jlpm install + build)
"$VENV/bin/python" -m pip install -q -e ".[test,docs,engines]"
export PATH="$PWD/$VENV/bin:$PATH"

step "labextension is installed"
extensions=$(jupyter labextension list 2>&1)
echo "$extensions"
if ! grep "dataagent-jupyter.*enabled.*OK" <<<"$extensions" >/dev/null; then
  echo "the dataagent-jupyter labextension is not installed and enabled" >&2
  exit 1
fi

step "lint and types"
ruff check .
ruff format --check .
mypy  # settings in pyproject.toml: dataagent_jupyter/, mypy's default checks

step "container files (hadolint; tests/test_container.py checks the rest)"
hadolint Dockerfile

step "docs (Sphinx, warnings are errors)"
python -m sphinx -W --keep-going -q -b html docs docs/_build/html

step "TypeScript unit tests"
(cd js && jlpm test)

step "Python tests (kernels, sandbox, widget, browser)"
DATAAGENT_CI=1 python -m pytest tests "$@"

step "sandbox, run-mode, engine run-mode and hostile-code suites as an unprivileged user"
# Root skips RLIMIT_NPROC and gets a network namespace; an ordinary user takes the other paths.
./scripts/test-unprivileged.sh

step "example notebooks (strict nbval: stored outputs compared, replayed transcripts, no key)"
# notebooks/sanitize.cfg masks timings, token counts, paths and ids; notebooks/conftest.py
# applies display updates so the final answers are what is compared
# (a fresh data dir: no history from earlier runs changes the replayed prompts)
nbdata=$(mktemp -d)
env -u OPENAI_API_KEY -u OPENAI_BASE_URL JUPYTER_DATA_DIR="$nbdata" python -m pytest --nbval \
  --nbval-sanitize-with notebooks/sanitize.cfg -p no:randomly notebooks/
rm -rf "$nbdata"

step "benchmarks (quick run: they must still work)"
for bench in benchmarks/bench_*.py; do python "$bench" --quick; done

step "all suites passed"
