#!/usr/bin/env bash
# The sandbox, run-mode, engine run-mode and hostile-code suites again, as an ordinary user.
#
# Root takes paths an ordinary user never does: Linux ignores RLIMIT_NPROC for uid 0 and
# only root gets a network namespace. So, when run as root (CI), this makes a user, gives
# it a copy of the tree in a folder it owns (the checkout may sit under /root, mode 0700)
# and a venv built from the system Python (the root venv's interpreter may live under
# /root too), then runs those suites through runuser. The venv is installed by root, so
# pip's cache from the main install is reused; the labextension is copied, not rebuilt
# (pyproject's skip-if-exists). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "already unprivileged ($(id -un)): the suites above ran without root"
  exit 0
fi

NAME=${DATAAGENT_TEST_USER:-dataagent-ci}
PYTHON=${UNPRIVILEGED_PYTHON:-/usr/bin/python3.11}
[ -x "$PYTHON" ] || PYTHON=/usr/bin/python3
started=$(date +%s)

id -u "$NAME" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$NAME"
HOME_DIR=$(getent passwd "$NAME" | cut -d: -f6)
TREE="$HOME_DIR/tree"
VENV="$HOME_DIR/venv"

# The working tree as it is (tests included), without what is machine-specific or big.
rm -rf "$TREE"
mkdir -p "$TREE"
tar --exclude=./.git --exclude='./.venv*' --exclude=./js/node_modules --exclude=./js/.yarn \
  --exclude='*/__pycache__' --exclude=./.pytest_cache -cf - . | tar -xf - -C "$TREE"
if [ ! -f "$TREE/dataagent_jupyter/labextension/static/style.js" ]; then
  echo "the labextension is not built; run scripts/test.sh (it builds it first)" >&2
  exit 1
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip
# engines too: DuckDB and polars run inside the sandbox child, whose file rules differ
# for an ordinary user (Landlock, cgroup files DuckDB reads for its thread count)
"$VENV/bin/python" -m pip install -q -e "$TREE[test,engines]"
chown -R "$NAME:" "$TREE"
echo "unprivileged environment ready in $(($(date +%s) - started)) s"

suites=(tests/test_sandbox.py tests/test_run_mode.py tests/test_engines_run.py)
for extra in tests/test_hostile*.py; do
  [ -e "$extra" ] && suites+=("$extra")
done

runuser -u "$NAME" -- env -i HOME="$HOME_DIR" USER="$NAME" LANG=C.UTF-8 \
  PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" DATAAGENT_CI=1 \
  bash -c 'cd "$1" && shift && exec python -m pytest -p no:cacheprovider \
    -m "not browser and not wheel" "$@"' _ "$TREE" "${suites[@]}" "$@"
echo "unprivileged suites done in $(($(date +%s) - started)) s"
