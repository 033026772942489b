#!/usr/bin/env bash
# Container entry point (also runnable from a checkout: it works in the folder above scripts/).
#   (no arguments)            dvc repro
#   SUBCOMMAND ARGS...        fct SUBCOMMAND ARGS...   when SUBCOMMAND is an `fct` subcommand
#   -h | --help | --version   fct ...
#   anything else             run as given (fct ..., dvc ..., bash, python ...)
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

if (($# == 0)); then
  set -- dvc repro
fi

# The subcommands come from the CLI itself (fct_registry.cli.COMMANDS), never a copied list.
subcommands=$(python -c 'from fct_registry.cli import COMMANDS; print(" ".join(COMMANDS))')
if [[ " $subcommands " == *" $1 "* || "$1" == -* ]]; then
  set -- fct "$@"
fi

# An image holds no .git (see .dockerignore): DVC then runs without an SCM.
if [[ "$1" == dvc && ! -d .git ]] && ! grep -qs "no_scm" .dvc/config.local; then
  dvc config --local core.no_scm true
fi

exec "$@"
