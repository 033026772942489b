#!/usr/bin/env bash
# Container entry point: default `dvc repro`; otherwise run the given command (e.g. `fct resolve`).
set -euo pipefail
cd /app
# DVC needs a repository; an image built from a source tarball has no .git.
if [[ ! -d .git ]]; then
  git init -q && git add -A >/dev/null 2>&1 && git -c user.email=fct@localhost -c user.name=fct \
    commit -qm "image snapshot" || true
fi
exec "$@"
