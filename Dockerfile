# syntax=docker/dockerfile:1
# The imagedrift operator image: `docker build -t imagedrift:0.1.0 .`
# Runs as a non-root user and needs no writable path but /tmp and the git clones' cache
# (the Deployment mounts emptyDirs there and sets readOnlyRootFilesystem).

# python:3.11-slim, pinned by digest so a rebuild is reproducible; update the digest when
# the base image is re-published (the problem imagedrift itself solves for your apps).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/imagedrift
WORKDIR /src
# Exactly the locked versions the tests ran with, each checked against its hash (`make lock`
# rewrites the lock); a layer of its own, so a code change does not reinstall them.
COPY requirements/runtime.txt ./requirements/
RUN /opt/imagedrift/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY operator ./operator
# A non-editable install of the package alone, built by the locked setuptools and compiled
# to bytecode at install time (nothing is written at run time).
RUN /opt/imagedrift/bin/pip install --no-deps --no-build-isolation . \
 && /opt/imagedrift/bin/pip uninstall --yes pip setuptools wheel

FROM ${PYTHON_IMAGE}
# git (and ssh for SSH remotes) for GitOps write-back: imagedrift commits with git itself.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git openssh-client \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 65532 imagedrift \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin imagedrift
COPY --from=build /opt/imagedrift /opt/imagedrift
# MALLOC_ARENA_MAX=2: glibc gives every contending thread an arena of its own; with the
# watch and worker threads parsing large JSON, freed memory stays spread over them
# (measured at 1,000 policies / 10,000 workloads: RSS 398-413 MiB by default, 251-376 MiB
# with 2, the spread between runs being large).
ENV PATH=/opt/imagedrift/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
# 8080 kopf health, 9090 Prometheus metrics, 8443 push-event receiver (TLS)
EXPOSE 8080 9090 8443
CMD ["kopf", "run", "-m", "imagedrift.wiring", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
