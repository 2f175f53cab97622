# The WTB image: the operator (`wtb-operator`), the CLI (`wtb`) and the Ray batch driver.
# Workflow images build on it (see examples/rag/Dockerfile), so Ray heads and workers run
# the same engine as the operator.
#
#   docker build -t wtb:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# KubeRay's probes of Ray head and worker containers run wget.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
COPY operator ./operator
RUN pip install ".[operator,ray]" \
    && rm -rf /build

# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin wtb
USER 10001
WORKDIR /home/wtb

CMD ["wtb-operator"]
