"""The API tokens' table in the registry's SQLite file, and its migrations (access/store.py
applies them, versioned as `api_tokens` in `schema_versions`)."""

from __future__ import annotations

COMPONENT = "api_tokens"
SCHEMA_VERSION = 2  # 2: the clinician role


def _table(name: str) -> str:
    return f"""
CREATE TABLE {name} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'clinician', 'admin')),
    tenants TEXT,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT,
    CHECK (tenants IS NOT NULL OR role = 'admin')
)"""


_INDEX = "CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL"
SCHEMA = f"{_table('api_tokens')};\n{_INDEX};\n"
# SQLite cannot change a CHECK in place: the table is copied into one with the new CHECK,
# every row (revoked ones too, the record of who had access) kept as it was.
MIGRATIONS = {
    1: f"""{_table("api_tokens_v2")};
INSERT INTO api_tokens_v2 (id, name, secret_sha256, role, tenants, created_at, last_used_at,
    revoked_at)
SELECT id, name, secret_sha256, role, tenants, created_at, last_used_at, revoked_at
FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_v2 RENAME TO api_tokens;
{_INDEX};
""",
}
