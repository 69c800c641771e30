# The gateway image: the package and its console script on python:3.11-slim.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UMSG_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY umsg ./umsg
COPY channels ./channels
COPY converters ./converters
COPY storage ./storage
RUN pip install . \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin umsg \
    && mkdir -p /data \
    && chown umsg /data

USER umsg
VOLUME ["/data"]
EXPOSE 8080
# exec form: umsg is PID 1 and gets SIGTERM directly for a graceful stop.
CMD ["umsg", "serve", "--http-host", "0.0.0.0"]
