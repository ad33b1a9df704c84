"""The privileged half of row-level security: what the app role must not be able to change.

The app role owns the tables (it runs migrations), so anything it could redefine cannot decide who sees what.
A superuser installs, in every database, a schema `app_private` owned by the NOLOGIN role `ragdesk_rls`:

- `scope_key`: the HMAC key (as its two padded halves) that signs the scope; no other role may read it.
- `is_system()` / `tenant_id()`: SECURITY DEFINER functions the policies call. They trust the connection's
  `app.scope` setting ('system' or 'tenant:<id>') only when `app.scope_sig` is its HMAC-SHA256 under the key.
  The app role can still call set_config, but without the key it cannot sign another scope.
- an event trigger refusing DDL (ALTER TABLE .. NO FORCE ROW LEVEL SECURITY, DROP POLICY, CREATE TRIGGER..)
  outside the signed system scope, so the table owner cannot switch RLS off either; migrate runs in it.

Pure psycopg, no Django: scripts/postgres_redis.py loads this file directly. Install with
`install(conn, key=..)` on a superuser connection to each database (and template1, so new databases start with it).
"""

from __future__ import annotations

import hashlib
import hmac

VERSION = 1
ROLE = "ragdesk_rls"
SCHEMA = "app_private"
EVENT_TRIGGER = "ragdesk_ddl_guard"
KEY_FILE_NAME = "rls.key"  # under var/, written by scripts/postgres_redis.py for its embedded PostgreSQL


def key_bytes(configured: str, secret_key: str) -> bytes:
    """The signing key: DATABASE_RLS_KEY when set, else derived from SECRET_KEY (so one secret can do)."""
    if configured:
        return configured.encode()
    return hmac.new(secret_key.encode(), b"ragdesk row-level security scope", hashlib.sha256).digest()


def sign(key: bytes, scope: str) -> str:
    return hmac.new(key, scope.encode(), hashlib.sha256).hexdigest() if scope else ""


def pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer padded keys, so SQL can compute sha256(opad || sha256(ipad || msg))."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(pads(key)[0]).hexdigest()


_DEFINER = "STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp"

_FUNCTIONS = {
    "verified_scope()": f"""
        CREATE OR REPLACE FUNCTION {SCHEMA}.verified_scope() RETURNS text LANGUAGE sql {_DEFINER} AS $$
            SELECT s.scope
            FROM (SELECT current_setting('app.scope', true) AS scope,
                         current_setting('app.scope_sig', true) AS sig) AS s
            JOIN {SCHEMA}.scope_key AS k ON k.id = 1
            WHERE s.scope <> ''
              AND s.sig = encode(sha256(k.opad || sha256(k.ipad || convert_to(s.scope, 'UTF8'))), 'hex')
        $$""",
    "is_system()": f"""
        CREATE OR REPLACE FUNCTION {SCHEMA}.is_system() RETURNS boolean LANGUAGE sql {_DEFINER} AS $$
            SELECT coalesce({SCHEMA}.verified_scope() = 'system', false)
        $$""",
    "tenant_id()": f"""
        CREATE OR REPLACE FUNCTION {SCHEMA}.tenant_id() RETURNS bigint LANGUAGE sql {_DEFINER} AS $$
            SELECT CASE WHEN v LIKE 'tenant:%' THEN substr(v, 8)::bigint END FROM {SCHEMA}.verified_scope() AS v
        $$""",
    "guard_version()": f"""
        CREATE OR REPLACE FUNCTION {SCHEMA}.guard_version() RETURNS integer LANGUAGE sql IMMUTABLE AS $$
            SELECT {VERSION}
        $$""",
    # An event trigger function runs as whoever ran the DDL: a superuser passes (it could drop the trigger anyway).
    "ddl_guard()": f"""
        CREATE OR REPLACE FUNCTION {SCHEMA}.ddl_guard() RETURNS event_trigger LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF {SCHEMA}.is_system() OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND rolsuper) THEN
                RETURN;
            END IF;
            RAISE EXCEPTION 'ragdesk: % refused outside the system scope', tg_tag
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Schema changes run through manage.py migrate (row-level security guard).';
        END
        $$""",
}


def installed(conn, key: bytes) -> bool:
    """Whether this database already has this version of the guard with this key (checked as a superuser)."""
    row = conn.execute(
        "SELECT to_regprocedure(%s) IS NOT NULL, EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = %s "
        "AND evtenabled <> 'D')",
        [f"{SCHEMA}.guard_version()", EVENT_TRIGGER],
    ).fetchone()
    if not all(row):
        return False
    version, found = conn.execute(
        f"SELECT {SCHEMA}.guard_version(), (SELECT encode(sha256(ipad), 'hex') FROM {SCHEMA}.scope_key)"
    ).fetchone()
    return version == VERSION and found == fingerprint(key)


def install(conn, *, key: bytes) -> bool:
    """Create or update the guard in the connected database (idempotent). `conn`: a superuser psycopg
    connection in autocommit mode. Returns False when it was already current."""
    if installed(conn, key):
        return False
    ipad, opad = pads(key)
    with conn.transaction():
        conn.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN "
            f"CREATE ROLE {ROLE} NOLOGIN NOINHERIT; END IF; END $$"
        )
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA} AUTHORIZATION {ROLE}")
        conn.execute(f"ALTER SCHEMA {SCHEMA} OWNER TO {ROLE}")
        conn.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")
        conn.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.scope_key "
            "(id integer PRIMARY KEY CHECK (id = 1), ipad bytea NOT NULL, opad bytea NOT NULL)"
        )
        conn.execute(f"ALTER TABLE {SCHEMA}.scope_key OWNER TO {ROLE}")
        conn.execute(f"REVOKE ALL ON {SCHEMA}.scope_key FROM PUBLIC")
        conn.execute(
            f"INSERT INTO {SCHEMA}.scope_key VALUES (1, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET ipad = EXCLUDED.ipad, opad = EXCLUDED.opad",
            [ipad, opad],
        )
        for signature, sql in _FUNCTIONS.items():
            conn.execute(sql)
            conn.execute(f"ALTER FUNCTION {SCHEMA}.{signature} OWNER TO {ROLE}")
        conn.execute(f"DROP EVENT TRIGGER IF EXISTS {EVENT_TRIGGER}")
        conn.execute(f"CREATE EVENT TRIGGER {EVENT_TRIGGER} ON ddl_command_start EXECUTE FUNCTION {SCHEMA}.ddl_guard()")
    return True
