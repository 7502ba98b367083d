# The service's image: wheels are built in a first stage; the runtime has no compiler, no dev
# dependencies and no development code, runs as a fixed non-root user and writes nothing
# (a read-only root filesystem works; give it a tmp volume if your platform expects one).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# A C compiler for the compiled core (mypyc, setup.py); the runtime stage has none.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
# Development-only code (the demo and the brokers for tests) stays out of the image. The core's
# hot modules are compiled (FALLBACK_COMPILE_CORE=1, the build `make unit-compiled` tests);
# mypyc type-checks them first, so the dependencies are installed here before the build.
RUN rm -rf service/dev \
    && pip install --no-cache-dir "setuptools>=77" "mypy>=1.10" . \
    && FALLBACK_COMPILE_CORE=1 pip wheel --no-cache-dir --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="fallback-service" \
      org.opencontainers.image.description="AlimTalk to SMS/LMS fallback (대체발송) on your own Kafka" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 fallback \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin fallback \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/fallback-console
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
# No .pyc files at run time: nothing is written to the root filesystem.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
# 8080: the service's /healthz, /readyz, /metrics; 8081: `fallback-service console`.
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["fallback-service"]
CMD ["run"]
