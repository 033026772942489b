# syntax=docker/dockerfile:1
# fct-registry image.
#   docker run IMAGE                      -> dvc repro (the pipeline on the embedded default)
#   docker run IMAGE gate --bootstrap     -> fct gate --bootstrap (any `fct` subcommand)
#   docker run IMAGE bash                 -> any other command, as given
# Every install step is scripts/setup.sh, which CI runs too (`make test` -> setup-test), so no
# step of this image goes untested although no Docker engine runs in CI; tests/test_dockerfile.py
# checks this file statically and runs the entry point.
#   docker build -t fct-registry .                                   # CPU
#   docker build --build-arg VARIANT=gpu -t fct-registry:gpu .       # CUDA base image
#   docker run --gpus all -v "$PWD/outputs:/app/outputs" fct-registry:gpu
# Base images are pinned by tag; pin by digest (IMAGE:TAG@sha256:...) where your registry allows.
ARG VARIANT=cpu
ARG CPU_BASE=python:3.11.11-slim-bookworm
ARG GPU_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CPU_BASE} AS base-cpu

FROM ${GPU_BASE} AS base-gpu
# The NVIDIA container runtime exposes the GPUs and the driver's compute libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM base-${VARIANT}
ARG VARIANT
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_WAIT_POLICY=PASSIVE \
    FCT_VARIANT=${VARIANT} \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Dependencies first (a cached layer while requirements do not change), then the code.
COPY requirements.txt pyproject.toml README.md ./
COPY fct_registry/__init__.py fct_registry/__init__.py
COPY scripts/setup.sh scripts/setup.sh
# Debian packages (Fashion-MNIST; Python where the base lacks it), the pinned venv, and the
# non-root user `fct` (uid 10001) owning /app.
RUN bash scripts/setup.sh --image

COPY --chown=fct:fct . .
USER fct

ENTRYPOINT ["bash", "scripts/entrypoint.sh"]
CMD ["dvc", "repro"]
