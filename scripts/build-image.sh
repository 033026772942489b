#!/usr/bin/env bash
# Build the container image with podman and check it from inside (`make image`).
#   scripts/build-image.sh                 CPU image, every check (the full smoke run)
#   scripts/build-image.sh --light         CPU image, checks: uid, `fct --help` (the CI variant)
#   scripts/build-image.sh --gpu --base nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
#                                          CUDA variant (same Dockerfile, VARIANT=gpu)
# Options: --base IMAGE (the base of the chosen variant), --tag NAME, --keep (keep the smoke
# run's folder), --pip-args (print the pip build arguments and mounts below, then stop).
# Needs podman and buildah (`scripts/setup.sh --containers`), run as root.
#
# Base: the Dockerfile's pinned base when it can be pulled; otherwise (no registry reachable) a
# Debian bookworm rootfs made by debootstrap and imported as localhost/fct-base:bookworm-minbase.
# pip: PyPI, plus this machine's local package index when its pip configuration has one
# (file:// extra-index-url / find-links folders) and the TLS bundle it trusts (cert): those are
# bind-mounted read-only for the build only and passed as build arguments, so no layer keeps
# them, and on a machine without them nothing changes.
#
# Checks run in the built image with `buildah run` (podman run needs cgroups this sandbox lacks;
# on a Docker host the same commands are `docker run -v ... IMAGE ...`): the user is uid 10001,
# `fct --help`, `dvc --version`, the heavy imports, then the default command (`dvc repro`) on a
# CI-sized params.yaml with outputs/ and the MLflow store as mounted volumes, and
# `gate --bootstrap` in a fresh container against the same volumes.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu base="" tag="" light=0 keep=0 pip_args_only=0
while (($#)); do
  case $1 in
    --gpu) variant=gpu ;;
    --cpu) variant=cpu ;;
    --base) base=$2; shift ;;
    --tag) tag=$2; shift ;;
    --light) light=1 ;;
    --keep) keep=1 ;;
    --pip-args) pip_args_only=1 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build-image: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
tag=${tag:-localhost/fct-registry:$variant}

# --- pip settings of this machine, for the build only ----------------------------------------
# Sets build_args/volumes from this machine's pip configuration: file:// extra-index-url and
# find-links folders, and the TLS bundle pip trusts (cert).
build_args=() volumes=()
pip_settings() {
  local pip_cfg url dir cert index_urls=() find_links=()
  pip_cfg=$(python3 -m pip config list 2>/dev/null || true)
  config_value() { sed -n "s/^[^=]*\.$1='\(.*\)'$/\1/p" <<<"$pip_cfg" | tail -1; }
  for url in $(config_value extra-index-url); do
    dir=${url#file://}
    [[ $url == file://* && -d $dir ]] || continue
    index_urls+=("$url")
    volumes+=(--volume "$(dirname "$dir"):$(dirname "$dir"):ro")  # simple/ links to ../files
  done
  for dir in $(config_value find-links); do
    dir=${dir#file://}
    [[ -d $dir ]] || continue
    find_links+=("$dir")
    volumes+=(--volume "$dir:$dir:ro")
  done
  if ((${#index_urls[@]} + ${#find_links[@]})); then
    build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${index_urls[*]}")
    build_args+=(--build-arg "PIP_FIND_LINKS=${find_links[*]}")
  fi
  cert=${PIP_CERT:-$(config_value cert)}
  if [[ -f $cert ]]; then
    volumes+=(--volume "$cert:/run/fct-build/ca.pem:ro")
    build_args+=(--build-arg PIP_CERT=/run/fct-build/ca.pem)
  fi
}
pip_settings
if ((pip_args_only)); then
  ((${#build_args[@]} == 0)) || printf "%s\n" "${build_args[@]}" "${volumes[@]}"
  exit 0
fi

for tool in podman buildah; do
  command -v "$tool" >/dev/null || {
    echo "build-image: $tool not found; install it with: scripts/setup.sh --containers" >&2
    exit 2
  }
done
[[ $(id -u) == 0 ]] || { echo "build-image: run as root (podman --isolation chroot)" >&2; exit 2; }

say() { printf '\n== %s ==\n' "$*"; }
elapsed() { echo $(($(date +%s) - $1)); }
t_all=$(date +%s)

base_s=0
# --- base image -------------------------------------------------------------------------------
default_base=$(sed -n "s/^ARG ${variant^^}_BASE=//p" Dockerfile)
base=${base:-$default_base}
if ! podman image exists "$base" && ! podman pull -q "$base" >/dev/null 2>&1; then
  if [[ $variant == gpu ]]; then
    echo "build-image: cannot pull $base; the GPU variant needs a CUDA base: --base IMAGE" >&2
    exit 2
  fi
  base=localhost/fct-base:bookworm-minbase
  if ! podman image exists "$base"; then
    say "no registry reachable: debootstrap a Debian bookworm base"
    command -v debootstrap >/dev/null || {
      echo "build-image: debootstrap not found: scripts/setup.sh --containers" >&2
      exit 2
    }
    # The mirror apt itself uses here (deb822 or one-line sources).
    mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources \
      /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 | awk '{print $2}' || true)
    rootfs=$(mktemp -d)
    t=$(date +%s)
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" \
      >/dev/null
    tar -C "$rootfs" -c . | podman import -q - "$base" >/dev/null
    rm -rf "$rootfs"
    base_s=$(elapsed "$t")
    echo "base $base made in $base_s s"
  fi
fi
echo "base: $base"
build_args+=(--build-arg "VARIANT=$variant" --build-arg "${variant^^}_BASE=$base")
((${#volumes[@]} == 0)) || printf 'pip, for the build only: %s\n' "${volumes[*]}"

# --- build ------------------------------------------------------------------------------------
say "podman build $tag"
t_build=$(date +%s)
podman build --isolation chroot --layers --target runtime "${build_args[@]}" "${volumes[@]}" \
  -t "$tag" . 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
build_s=$(elapsed "$t_build")

# --- checks inside the image -------------------------------------------------------------------
work=""
cleanup() { if [[ -n $work && $keep == 0 ]]; then rm -rf "$work"; fi; }
trap cleanup EXIT
# `docker run --rm [VOLUMES] IMAGE ARGS...`: a fresh container from the image, its entry point
# with ARGS, the container removed afterwards (also when called in a $(...) subshell).
in_image() {
  local ctr status=0
  ctr=$(buildah from -q "$tag")
  buildah run --isolation chroot "${run_opts[@]}" "$ctr" -- bash scripts/entrypoint.sh "$@" ||
    status=$?
  buildah rm "$ctr" >/dev/null
  return "$status"
}
run_opts=()

say "checks in $tag"
uid=$(in_image id -u)
echo "user id inside: $uid ($(in_image id -un))"
[[ $uid == 10001 ]] || { echo "build-image: the image runs as uid $uid, not 10001" >&2; exit 1; }
in_image fct --help | head -3
if ((light == 0)); then
  in_image dvc --version
  in_image python -c "import fct_registry, torch, mlflow, onnxruntime;
print('imports ok: torch', torch.__version__, 'mlflow', mlflow.__version__,
      'onnxruntime', onnxruntime.__version__, 'cuda', torch.cuda.is_available())"

  say "smoke run: dvc repro on a CI-sized params.yaml, volumes outputs/ and store/"
  work=$(mktemp -d)
  mkdir -p "$work/outputs" "$work/store"
  # The CI-sized params are the ones the end-to-end tests use (tests/conftest.py: tiny_params).
  in_image python -c "import yaml; from tests.conftest import tiny_params;
print(yaml.safe_dump(tiny_params()))" >"$work/params.yaml"
  chown -R 10001:10001 "$work"
  run_opts=(
    --volume "$work/outputs:/app/outputs"
    --volume "$work/store:/store"
    --volume "$work/params.yaml:/app/params.yaml:ro"
    --env MLFLOW_TRACKING_URI=sqlite:////store/mlflow.db
    --env OMP_NUM_THREADS=2
  )
  t=$(date +%s)
  in_image >"$work/repro.log" 2>&1 || { tail -40 "$work/repro.log"; exit 1; }
  grep -E "^Running stage" "$work/repro.log" | sed 's/^/  /'
  echo "dvc repro: $(elapsed "$t") s; registered: $(tr -d '\n ' <"$work/outputs/registry.json" |
    head -c 200)"
  ls "$work/store"

  say "gate --bootstrap in a fresh container, same volumes"
  set +e
  in_image gate --bootstrap --json-out /app/outputs/gate-smoke.json
  gate_status=$?
  set -e
  verdict=$(python3 -c "import json, sys; r = json.load(open(sys.argv[1]));
f, c, b = r['family'], r['candidate']['version'], r['baseline']['version'];
print(r['verdict'].upper(), f'(candidate {f}@{c}, baseline {f}@{b}, bootstrap {r[\"bootstrap\"]})')" \
    "$work/outputs/gate-smoke.json" 2>/dev/null || echo "no report")
fi

# --- summary ----------------------------------------------------------------------------------
say "summary"
size=$(podman image inspect "$tag" --format '{{.Size}}')
source=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
git diff --quiet HEAD -- 2>/dev/null || source+=" plus uncommitted changes"
total_s=$(elapsed "$t_all")
echo "image: $tag (variant $variant, base $base, source $source)"
echo "base: ${base_s} s; build time: ${build_s} s; checks: $((total_s - base_s - build_s)) s;" \
  "total: ${total_s} s"
echo "image size: $((size / 1000000)) MB"
echo "user id inside: $uid"
if ((light == 0)); then
  echo "gate verdict (smoke run): $verdict (fct gate exit status $gate_status)"
  ((gate_status < 2)) || exit 1  # 2: the gate could not run; 0/1 are verdicts
fi
