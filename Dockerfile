# fct-registry image: `docker run IMAGE` runs `dvc repro`; `docker run IMAGE fct ...` runs a command.
# Every install step lives in scripts/setup.sh, which CI runs too (`make test` -> setup-test),
# so no step of this image goes untested although no Docker engine runs in CI.
#   docker build -t fct-registry .
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 -t fct-registry:gpu .
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    OMP_WAIT_POLICY=PASSIVE \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A CUDA base image (GPU variant) may lack Python; the default base has it.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends git make \
    && (command -v python3 >/dev/null || apt-get install -y -qq python3 python3-venv) \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (cached layer), then the code.
COPY requirements.txt pyproject.toml README.md ./
COPY fct_registry/__init__.py fct_registry/__init__.py
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh && rm -rf /root/.cache/pip

COPY . .
RUN /opt/venv/bin/pip install -q --no-deps -e . \
    && useradd --create-home --uid 10001 fct && chown -R fct:fct /app
USER fct

ENTRYPOINT ["bash", "scripts/entrypoint.sh"]
CMD ["dvc", "repro"]
