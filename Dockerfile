# syntax=docker/dockerfile:1
# fct-registry image. Built and checked by scripts/build-image.sh (podman; `make image`).
#   docker run IMAGE                      -> dvc repro (the pipeline on the embedded default)
#   docker run IMAGE gate --bootstrap     -> fct gate --bootstrap (any `fct` subcommand)
#   docker run IMAGE bash                 -> any other command, as given
# Volumes (README "Container"): /app/outputs (pipeline outputs), a store folder for the MLflow
# database and its artifacts (MLFLOW_TRACKING_URI=sqlite:////store/mlflow.db), both writable by
# uid 10001.
#   docker build -t fct-registry .                                   # CPU
#   docker build --build-arg VARIANT=gpu -t fct-registry:gpu .       # CUDA base image
# Base images are pinned by tag; pin by digest (IMAGE:TAG@sha256:...) where your registry allows.
# Any base works where `apt-get` does: python:*-slim, a debootstrapped Debian, CUDA Ubuntu
# (scripts/setup.sh --image installs Python where the base lacks it).
ARG VARIANT=cpu
ARG CPU_BASE=python:3.11.11-slim-bookworm
ARG GPU_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CPU_BASE} AS base-cpu

FROM ${GPU_BASE} AS base-gpu
# The NVIDIA container runtime exposes the GPUs and the driver's compute libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Dependencies: a cached layer while requirements*.txt and scripts/setup.sh do not change (the
# project itself is installed in the last stage, so code, README and version edits keep it).
# base-cpu or base-gpu, the stages above (their images are pinned by the ARGs):
# hadolint ignore=DL3006
FROM base-${VARIANT} AS deps
ARG VARIANT
# scripts/build-image.sh removes earlier builds that no tag uses any more by this label.
LABEL org.opencontainers.image.title="fct-registry"
# Extra pip settings for this build only (ARGs are not kept in the image's environment): empty,
# pip uses PyPI with the base's CA bundle. scripts/build-image.sh passes the host's local
# package index (file:// URLs) and TLS bundle, bind-mounted during the build (no layer keeps
# them).
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_CERT=""
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_WAIT_POLICY=PASSIVE \
    FCT_VARIANT=${VARIANT} \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY requirements.txt requirements-dev.txt ./
COPY scripts/setup.sh scripts/setup.sh
# Debian packages (Fashion-MNIST; Python where the base lacks it), the pinned venv, and the
# non-root user `fct` (uid 10001) owning /app.
RUN bash scripts/setup.sh --image

# The image: the code on top, run as `fct`. Numeric ids, so that a runtime can check that the
# user is not root without the image's /etc/passwd (Kubernetes runAsNonRoot).
FROM deps AS runtime
COPY --chown=10001:10001 . .
# The same script over the code: everything but the project is installed, so it only installs
# the project (editable, over /app): a layer of a few kB.
RUN bash scripts/setup.sh --image
USER 10001:10001
ENTRYPOINT ["bash", "scripts/entrypoint.sh"]
CMD ["dvc", "repro"]
