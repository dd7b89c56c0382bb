# The moclo image: `moclo ingest`, `moclo serve`, `moclo simulate`, and the rest of the CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY moclo ./moclo
COPY ingest ./ingest
COPY devices ./devices
COPY simulators ./simulators
COPY query ./query
COPY serve ./serve
COPY access ./access
# /var/lib/moclo holds the spool and the alert state; owned by moclo so that a new named
# volume mounted there is writable.
RUN pip install --no-cache-dir . && useradd --system --uid 10001 moclo \
    && mkdir -p /var/lib/moclo && chown moclo /var/lib/moclo
USER moclo
ENTRYPOINT ["moclo"]
CMD ["--help"]
