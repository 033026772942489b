#!/usr/bin/env bash
# Build the container image with podman and check it from inside (`make image`).
#   scripts/build-image.sh                 CPU image, every check (the full smoke run)
#   scripts/build-image.sh --light         CPU image, checks: uid, `fct --help` (the CI variant)
#   scripts/build-image.sh --light --ci    what .ci/run runs: installs missing container tools,
#                                          and SKIPS (exit 0, "image build skipped: REASON") when
#                                          this machine cannot build images at all
#   scripts/build-image.sh --gpu --base nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
#                                          CUDA variant (same Dockerfile, VARIANT=gpu)
# Every build first and last removes this project's images that no tag uses any more (earlier
# builds; found by the Dockerfile's label), so repeated builds do not fill the disk.
# Options: --base IMAGE (the base of the chosen variant), --tag NAME, --file DOCKERFILE, --keep
# (keep the smoke run's folder), --pip-args (print the pip build arguments and mounts below,
# then stop). Needs podman and buildah (`scripts/setup.sh --containers`), run as root.
#
# --ci: a machine that cannot build images is not a failure of the project. Skipped when the
# tools cannot be installed (BUILD_IMAGE_INSTALL=0: do not try), when not root, when `podman
# info` fails, when no base image can be had (no registry, debootstrap fails) and when a RUN in
# chroot isolation is not permitted (probed with `buildah run` on the base). Everything after
# that, the Dockerfile's build and the checks in the image, fails CI as usual (exit 1; 2 for
# a usage error such as a missing Dockerfile).
#
# Base: the Dockerfile's pinned base when it can be pulled; otherwise (no registry reachable) a
# Debian bookworm rootfs made by debootstrap and imported as localhost/fct-base:bookworm-minbase.
# The rootfs tarball is cached in $FCT_IMAGE_CACHE (default ~/.cache/fct-registry) and reused
# for 7 days; delete it to refresh the base.
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

variant=cpu base="" tag="" light=0 keep=0 pip_args_only=0 ci=0 dockerfile=Dockerfile
while (($#)); do
  case $1 in
    --gpu) variant=gpu ;;
    --cpu) variant=cpu ;;
    --base) base=$2; shift ;;
    --tag) tag=$2; shift ;;
    --light) light=1 ;;
    --keep) keep=1 ;;
    --ci) ci=1 ;;
    --file) dockerfile=$2; shift ;;
    --pip-args) pip_args_only=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
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

say() { printf '\n== %s ==\n' "$*"; }
elapsed() { echo $(($(date +%s) - $1)); }
t_all=$(date +%s)
# The source the build context is made of, taken now (the checkout may move during the build).
source=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
git diff --quiet HEAD -- 2>/dev/null || source+=" plus uncommitted changes"

# --- preflight: can this machine build images at all? -----------------------------------------
# A problem of the project (no Dockerfile) fails in every mode; a machine that cannot build
# images fails a manual run (exit 2) but skips under --ci (exit 0, said loudly).
[[ -f $dockerfile ]] || { echo "build-image: no such Dockerfile: $dockerfile" >&2; exit 2; }
unavailable() {
  if ((ci)); then
    printf '\n%s\n' "########################################################################"
    echo "image build skipped: $*"
    echo "(this machine cannot build container images; not a failure of the project)"
    printf '%s\n\n' "########################################################################"
    exit 0
  fi
  echo "build-image: $*" >&2
  exit 2
}
missing_tools() {
  local tool out=()
  for tool in "$@"; do command -v "$tool" >/dev/null || out+=("$tool"); done
  echo "${out[*]}"
}
missing=$(missing_tools podman buildah debootstrap)
if [[ -n $missing && $ci == 1 && ${BUILD_IMAGE_INSTALL:-1} != 0 ]]; then
  bash scripts/setup.sh --containers ||
    unavailable "scripts/setup.sh --containers could not install $missing"
  missing=$(missing_tools podman buildah debootstrap)
fi
for tool in podman buildah; do
  [[ " $missing " != *" $tool "* ]] ||
    unavailable "$tool not found; install it with: scripts/setup.sh --containers"
done
[[ $(id -u) == 0 ]] || unavailable "not root (this script builds with podman --isolation chroot)"
info_err=$(podman info 2>&1 >/dev/null) ||
  unavailable "podman info failed: $(grep -m1 . <<<"$info_err")"

# --- base image -------------------------------------------------------------------------------
base_s=0
default_base=$(sed -n "s/^ARG ${variant^^}_BASE=//p" "$dockerfile")
base=${base:-$default_base}
[[ -n $base ]] || { echo "build-image: $dockerfile has no ARG ${variant^^}_BASE" >&2; exit 2; }
# A registry that is blocked rather than unknown makes podman retry for minutes: 120 s at most.
if ! podman image exists "$base" && ! timeout 120 podman pull -q "$base" >/dev/null 2>&1; then
  [[ $variant == cpu ]] ||
    unavailable "cannot pull $base; the GPU variant needs a CUDA base: --base IMAGE"
  base=localhost/fct-base:bookworm-minbase
  if ! podman image exists "$base"; then
    t=$(date +%s)
    cache=${FCT_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/fct-registry}
    tarball=$cache/bookworm-minbase-$(uname -m).tar
    if [[ -n $(find "$tarball" -mtime -7 2>/dev/null) ]]; then
      say "no registry reachable: the cached Debian bookworm base $tarball"
    else
      say "no registry reachable: debootstrap a Debian bookworm base"
      [[ " $missing " != *" debootstrap "* ]] ||
        unavailable "debootstrap not found; install it with: scripts/setup.sh --containers"
      # The mirror apt itself uses here (deb822 or one-line sources).
      mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 | awk '{print $2}' || true)
      rootfs=$(mktemp -d)
      debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" \
        >"$rootfs.log" 2>&1 || {
        tail -5 "$rootfs.log" >&2
        rm -rf "$rootfs" "$rootfs.log"
        unavailable "no base image: the pinned one cannot be pulled and debootstrap failed"
      }
      mkdir -p "$cache"
      tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
      rm -rf "$rootfs" "$rootfs.log"
    fi
    podman import -q - "$base" <"$tarball" >/dev/null ||
      unavailable "podman import of $tarball failed"
    base_s=$(elapsed "$t")
    echo "base $base made in $base_s s"
  fi
fi
echo "base: $base"
# A RUN step in chroot isolation, probed on the base: the sandbox may forbid it.
probe=$(buildah from -q "$base" 2>&1) || unavailable "buildah from $base failed: $probe"
probe_err=$(buildah run --isolation chroot "$probe" -- true 2>&1) || {
  buildah rm "$probe" >/dev/null 2>&1 || true
  unavailable "chroot isolation not permitted: buildah run failed: $(grep -m1 . <<<"$probe_err")"
}
buildah rm "$probe" >/dev/null
build_args+=(--build-arg "VARIANT=$variant" --build-arg "${variant^^}_BASE=$base")
((${#volumes[@]} == 0)) || printf 'pip, for the build only: %s\n' "${volumes[*]}"

# Earlier builds of this project that no tag uses any more, found by the Dockerfile's label: a
# rebuilt tag leaves its old image untagged, and each dependency layer is ~7.5 GB, so on a
# machine that builds again and again (CI) they fill the disk. The tagged image and its layers,
# the cache of the next build, stay.
label=org.opencontainers.image.title=fct-registry
prune_untagged() {
  local removed
  removed=$(podman image prune -f --filter "label=$label" 2>/dev/null | grep -c . || true)
  ((removed == 0)) || echo "removed $removed untagged fct-registry image(s) of earlier builds"
}

# --- build: from here on, every failure is the project's --------------------------------------
say "podman build $tag"
prune_untagged
t_build=$(date +%s)
podman build --isolation chroot --layers --target runtime "${build_args[@]}" "${volumes[@]}" \
  -f "$dockerfile" -t "$tag" . 2>&1 |
  { grep --line-buffered -v "is ignored: it is neither a file nor a directory" || true; }
build_s=$(elapsed "$t_build")
prune_untagged  # the image this build replaced

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
