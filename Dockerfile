# The moclo image: `moclo ingest`, `moclo serve`, `moclo simulate`, and the rest of the CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY moclo ./moclo
COPY ingest ./ingest
COPY notify ./notify
COPY devices ./devices
COPY simulators ./simulators
COPY query ./query
COPY serve ./serve
COPY access ./access
COPY core ./core
COPY storage ./storage
# Folders that docker-compose mounts named volumes on, made here so that a new volume starts
# with their owner and mode: /var/lib/moclo (ingest's spool and alert state), the registry, a
# secrets folder per service (0700), and the broker's password and ACL files, shared with the
# eclipse-mosquitto image's `mosquitto` group (gid 1883) so that its broker can read them.
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 10001 --groups mosquitto moclo \
    && mkdir -p /var/lib/moclo /var/lib/moclo-registry /var/lib/moclo-broker \
        /var/lib/moclo-secrets/ingest /var/lib/moclo-secrets/serve \
        /var/lib/moclo-secrets/simulator /var/lib/moclo-secrets/engine-ingest-0 \
        /var/lib/moclo-secrets/engine-ingest-1 /var/lib/moclo-secrets/engine-serve \
        /var/lib/moclo-secrets/engine-simulator \
    && chown moclo /var/lib/moclo /var/lib/moclo-registry /var/lib/moclo-secrets/* \
    && chmod 0700 /var/lib/moclo-registry /var/lib/moclo-secrets/* \
    && chown moclo:mosquitto /var/lib/moclo-broker && chmod 0750 /var/lib/moclo-broker
USER moclo
ENTRYPOINT ["moclo"]
CMD ["--help"]
