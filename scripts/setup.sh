#!/usr/bin/env bash
# Idempotent setup of everything the project needs; the Dockerfile runs this same script.
#   scripts/setup.sh           system packages + .venv with the pinned requirements
#   scripts/setup.sh --test    also what the test suite needs (PostgreSQL, Chromium)
#   scripts/setup.sh --image   container build (root): also Python where the base image lacks it
#                              (CUDA bases), and the non-root user `fct` (uid 10001) owning the
#                              project folder
#   scripts/setup.sh --containers  only the container tools `make image` needs (podman, buildah,
#                              debootstrap); no venv
# Fast when nothing changed: the venv is rebuilt only when requirements*.txt change, the project
# reinstalled only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--containers" ]]; then
  tools=(podman buildah debootstrap)
  missing=()
  for pkg in "${tools[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  exit 0
fi

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
WITH_TEST=0
WITH_IMAGE=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
[[ "${1:-}" == "--image" ]] && WITH_IMAGE=1

apt_packages=(dataset-fashion-mnist)
[[ $WITH_TEST == 1 ]] && apt_packages+=(postgresql chromium)
if [[ $WITH_IMAGE == 1 ]] && ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
  apt_packages+=(python3 python3-venv)
fi

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ $WITH_IMAGE == 1 ]] && rm -rf /var/lib/apt/lists/*
fi

if [[ $WITH_IMAGE == 1 ]]; then
  id -u fct >/dev/null 2>&1 || useradd --create-home --uid 10001 --user-group --shell /bin/bash fct
  chown fct:fct .
fi

stamp="$VENV/.fct-installed"
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: building $VENV (pinned requirements; torch comes from the local wheel cache)"
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # One resolver call for everything (runtime + dev tools): boto3 alone can pull a botocore that
  # dvc-s3 rejects.
  "$VENV/bin/pip" install -q -r requirements.txt -r requirements-dev.txt
  "$VENV/bin/pip" check
  echo "$want" > "$stamp"
fi

# The project itself, editable. The image's dependency layer runs this script before the code
# is copied in (no pyproject.toml yet) and its last stage runs it again over the code, so a
# code or README edit rebuilds a small layer, not the 7 GB one. No build isolation: setuptools
# is pinned in requirements-dev.txt, and the image's last stage has no package index.
[[ -f pyproject.toml ]] || exit 0
stamp="$VENV/.fct-project"
want=$(cat pyproject.toml <(pwd) | sha256sum | cut -d' ' -f1)
[[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && exit 0
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/pip" check
echo "$want" > "$stamp"
