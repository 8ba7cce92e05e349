"""Database triggers that make the audit table append-only in SQL, not only in the ORM.

Row triggers refuse DELETE, and every UPDATE but one: sealing (audit.sealer), which gives an
unsealed row (seq NULL) its seq, prev_hash, hash and algorithm and changes nothing else. A sealed
row can never be updated again. Two statements slip past row triggers, so each has its own:
- PostgreSQL's TRUNCATE fires no row trigger: a statement-level BEFORE TRUNCATE trigger refuses it.
- SQLite's INSERT OR REPLACE deletes the conflicting row without firing delete triggers (unless
  recursive_triggers is on): a BEFORE INSERT trigger refuses any insert whose id, seq or hash (the
  unique columns) already exists. An ordinary append has none of them, so it passes.
(INSERT … ON CONFLICT DO UPDATE is an UPDATE, which the update triggers refuse on both.)

None of this stops whoever owns the table: they can drop the triggers. verify_audit and the
checkpoints (audit.checkpoints) are for that case. Tests that simulate such an attacker drop and
re-create the triggers through these helpers.

Migrations 0002 and 0003 installed the triggers of the table before it had `id` (`sealing=False`:
refuse every UPDATE); migration 0004 replaces them with the ones here by default.
"""
TABLE = "audit_auditevent"

_PG_FUNCTION = f"""
    CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit log is append-only: % refused on {TABLE}', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql;
    """

# The content of a row: what sealing must leave as it was.
CONTENT_COLUMNS = (
    "id", "time", "action", "principal", "target_type", "target_id", "details", "result", "write_mac",
)
_PG_UNCHANGED = " AND ".join(f"NEW.{c} IS NOT DISTINCT FROM OLD.{c}" for c in CONTENT_COLUMNS)
_SQLITE_UNCHANGED = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in CONTENT_COLUMNS)
_SEALED = "NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL AND NEW.algorithm IS NOT NULL"

_PG_SEAL_FUNCTION = f"""
    CREATE OR REPLACE FUNCTION audit_seal_only() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND {_SEALED} AND {_PG_UNCHANGED} THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit log is append-only: % refused on {TABLE}', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql;
    """

# name → (install, remove), per vendor, in install order.
_TRIGGERS = {
    "postgresql": {
        "audit_no_update_delete": (
            [
                _PG_FUNCTION,
                f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {TABLE};",
                f"""
                CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE}
                FOR EACH ROW EXECUTE FUNCTION audit_append_only();
                """,
            ],
            [f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {TABLE};"],
        ),
        "audit_no_truncate": (
            [
                _PG_FUNCTION,
                f"DROP TRIGGER IF EXISTS audit_no_truncate ON {TABLE};",
                f"""
                CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {TABLE}
                FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
                """,
            ],
            [f"DROP TRIGGER IF EXISTS audit_no_truncate ON {TABLE};"],
        ),
    },
    "sqlite": {
        "audit_no_update": (
            [
                f"""
                CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON {TABLE}
                BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused on {TABLE}'); END;
                """
            ],
            ["DROP TRIGGER IF EXISTS audit_no_update;"],
        ),
        "audit_no_delete": (
            [
                f"""
                CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON {TABLE}
                BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused on {TABLE}'); END;
                """
            ],
            ["DROP TRIGGER IF EXISTS audit_no_delete;"],
        ),
        # Two EXISTS rather than one OR, so that each uses its own unique index. The table is
        # spelled out (no formatting) so that linters see a constant statement.
        "audit_no_replace": (
            [
                """
                CREATE TRIGGER IF NOT EXISTS audit_no_replace BEFORE INSERT ON audit_auditevent
                WHEN EXISTS (SELECT 1 FROM audit_auditevent WHERE seq = NEW.seq)
                  OR EXISTS (SELECT 1 FROM audit_auditevent WHERE hash = NEW.hash)
                BEGIN SELECT RAISE(ABORT, 'audit log is append-only: replacing a row refused on audit_auditevent');
                END;
                """
            ],
            ["DROP TRIGGER IF EXISTS audit_no_replace;"],
        ),
    },
}
# Since migration 0004: the update triggers let sealing through, the replace guard covers `id`.
_SEALING_TRIGGERS = {
    "postgresql": {
        **_TRIGGERS["postgresql"],
        "audit_no_update_delete": (
            [
                _PG_SEAL_FUNCTION,
                f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {TABLE};",
                f"""
                CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE}
                FOR EACH ROW EXECUTE FUNCTION audit_seal_only();
                """,
            ],
            [f"DROP TRIGGER IF EXISTS audit_no_update_delete ON {TABLE};"],
        ),
    },
    "sqlite": {
        **_TRIGGERS["sqlite"],
        "audit_no_update": (
            [
                f"""
                CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON {TABLE}
                WHEN NOT (OLD.seq IS NULL AND {_SEALED} AND {_SQLITE_UNCHANGED})
                BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused on {TABLE}'); END;
                """
            ],
            ["DROP TRIGGER IF EXISTS audit_no_update;"],
        ),
        "audit_no_replace": (
            [
                """
                CREATE TRIGGER IF NOT EXISTS audit_no_replace BEFORE INSERT ON audit_auditevent
                WHEN EXISTS (SELECT 1 FROM audit_auditevent WHERE id = NEW.id)
                  OR EXISTS (SELECT 1 FROM audit_auditevent WHERE seq = NEW.seq)
                  OR EXISTS (SELECT 1 FROM audit_auditevent WHERE hash = NEW.hash)
                BEGIN SELECT RAISE(ABORT, 'audit log is append-only: replacing a row refused on audit_auditevent');
                END;
                """
            ],
            ["DROP TRIGGER IF EXISTS audit_no_replace;"],
        ),
    },
}
# What migration 0002 installed; migration 0003 added the rest.
FIRST_TRIGGERS = ("audit_no_update_delete", "audit_no_update", "audit_no_delete")
ADDED_IN_0003 = ("audit_no_truncate", "audit_no_replace")


def _statements(vendor, names, which, sealing=True):
    chosen = [
        sql
        for name, pair in (_SEALING_TRIGGERS if sealing else _TRIGGERS).get(vendor, {}).items()
        if names is None or name in names
        for sql in pair[which]
    ]
    if vendor == "postgresql" and which == 1 and names is None:
        chosen += ["DROP FUNCTION IF EXISTS audit_append_only();", "DROP FUNCTION IF EXISTS audit_seal_only();"]
    return chosen


POSTGRESQL_INSTALL = _statements("postgresql", None, 0)
POSTGRESQL_REMOVE = _statements("postgresql", None, 1)
SQLITE_INSTALL = _statements("sqlite", None, 0)
SQLITE_REMOVE = _statements("sqlite", None, 1)
INSTALL = {"postgresql": POSTGRESQL_INSTALL, "sqlite": SQLITE_INSTALL}
REMOVE = {"postgresql": POSTGRESQL_REMOVE, "sqlite": SQLITE_REMOVE}


def install(connection, names=None, *, sealing=True):
    """Install the named triggers (all by default); `sealing=False`: as before migration 0004. Idempotent."""
    for sql in _statements(connection.vendor, names, 0, sealing):
        with connection.cursor() as cursor:
            cursor.execute(sql)


def remove(connection, names=None):
    """Remove the named triggers (all, and the PostgreSQL function, by default)."""
    for sql in _statements(connection.vendor, names, 1):
        with connection.cursor() as cursor:
            cursor.execute(sql)
