# The moclo image: `moclo ingest`, `moclo simulate`, and the rest of the CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY moclo ./moclo
COPY ingest ./ingest
COPY devices ./devices
COPY simulators ./simulators
RUN pip install --no-cache-dir . && useradd --system --uid 10001 moclo
USER moclo
ENTRYPOINT ["moclo"]
CMD ["--help"]
