"""Database triggers that make the audit table append-only in SQL, not only in the ORM.

Tests that simulate an attacker with DDL rights drop and re-create them through these helpers.
"""
TABLE = "audit_auditevent"

POSTGRESQL_INSTALL = [
    f"""
    CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit log is append-only: % refused on {TABLE}', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql;
    """,
    f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {TABLE};",
    f"""
    CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
    """,
]
POSTGRESQL_REMOVE = [
    f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {TABLE};",
    "DROP FUNCTION IF EXISTS audit_append_only();",
]

SQLITE_INSTALL = [
    f"""
    CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused on {TABLE}'); END;
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused on {TABLE}'); END;
    """,
]
SQLITE_REMOVE = ["DROP TRIGGER IF EXISTS audit_no_update;", "DROP TRIGGER IF EXISTS audit_no_delete;"]

_STATEMENTS = {
    "postgresql": (POSTGRESQL_INSTALL, POSTGRESQL_REMOVE),
    "sqlite": (SQLITE_INSTALL, SQLITE_REMOVE),
}


def install(connection):
    for sql in _STATEMENTS.get(connection.vendor, ([], []))[0]:
        with connection.cursor() as cursor:
            cursor.execute(sql)


def remove(connection):
    for sql in _STATEMENTS.get(connection.vendor, ([], []))[1]:
        with connection.cursor() as cursor:
            cursor.execute(sql)
