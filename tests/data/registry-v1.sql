-- A registry file made by moclo at commit 06cda4b (api_tokens schema 1, registry schema 1),
-- dumped with sqlite3's iterdump: tests/test_tokens.py migrates it. Throwaway secrets; the tokens
-- of ana and root: moclo_9ae2485dc511_1_xpoGfXGaNnaDcO0nBzQD5Ur6IpwQa4fq15vJrkSFM moclo_176e1bbef797_O-J5KiwyZsQqy1f8iqF8tptEQmKyG92ZfuwWChglcSI
BEGIN TRANSACTION;
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant TEXT,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
INSERT INTO "accounts" VALUES(1,'vet','operator','farm','$7$101$rGff2LOuil5jno7A$Pg8V+FWX2+TOKebGuJ4iM9A1FePD6WB1jW54nXfLREEQV+MqG/XmxJlmqpGqyfFYdjCLs2m2kxbsqVt3iab4WA==','2026-12-06T14:33:42Z',NULL);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    tenants TEXT,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT,
    CHECK (tenants IS NOT NULL OR role = 'admin')
);
INSERT INTO "api_tokens" VALUES('9ae2485dc511','ana','552e7fe92b1d18e72e4d677a6de0fe1cc20bb96c80c2a4a4c16b8928d2746621','operator','["farm"]','2026-12-06T14:33:42Z',NULL,NULL);
INSERT INTO "api_tokens" VALUES('4be029fb4298','wall','3bc6f76f71011197a717dd756d850687f8fa326de451de47ad7f7896fbc032b4','viewer','["clinic", "farm"]','2026-12-06T14:33:42Z',NULL,NULL);
INSERT INTO "api_tokens" VALUES('176e1bbef797','root','d88080f7e81c76724090c8b0acebbfb1ef60b3653e545daba183d8dd8490ce02','admin',NULL,'2026-12-06T14:33:42Z',NULL,NULL);
INSERT INTO "api_tokens" VALUES('3857d51c273f','old','0013cb0ab875473d67584ebb720783ec4f693ddaad605d18122a60f7d460fb5d','viewer','["farm"]','2026-12-06T14:33:42Z',NULL,'2026-12-06T14:33:42Z');
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_type TEXT NOT NULL,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
INSERT INTO "devices" VALUES(1,'farm','cow-1','cow_tracker','farm.cow-1','$7$101$3y+eUdfwRi4fABgm$BEGw6a7U4wWCI17JSFGl1DwrIQEilC2DvrHV5ogYF1gtv/heHw/+b9mNRRHP7L805wQQoTGeacln/Sxz8uDleQ==','2026-12-06T14:33:42Z',NULL);
CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
INSERT INTO "schema_versions" VALUES('registry',1);
INSERT INTO "schema_versions" VALUES('api_tokens',1);
CREATE UNIQUE INDEX devices_active ON devices (tenant, device_id) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX accounts_active ON accounts (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;
COMMIT;
