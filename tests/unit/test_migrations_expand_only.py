"""Migrations run before a new version takes traffic, while the previous version still serves: a migration's
upgrade() may only expand the schema, never drop or rename a table or column the serving version may still use.
A migration that does is a contract step, and must say so at module level:

    CONTRACT = True
    CONTRACT_REASON = "runs.legacy_state: unused since release 2026.11 (read and written as runs.state)"

See README.md, "Migrations: expand, then contract". The migrations are read with `ast`, never imported nor run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

VERSIONS = Path(__file__).resolve().parents[2] / "app" / "migrations" / "versions"
# Alembic operations (on `op` or a batch_alter_table's `batch_op`) that remove or rename a table or a column.
DROPS_OR_RENAMES = {"drop_table", "drop_column", "rename_table"}
DESTRUCTIVE_SQL = re.compile(
    r"\bDROP\s+(TABLE|COLUMN)\b"
    # PostgreSQL's `ALTER TABLE t DROP c` (COLUMN is optional); dropping a constraint or default keeps the data.
    r"|\bALTER\s+TABLE\b[^;]*?\bDROP\s+(?!(CONSTRAINT|DEFAULT|NOT\s+NULL|IDENTITY|EXPRESSION)\b)\w"
    # `RENAME TO`, `RENAME COLUMN c TO d` and `RENAME c TO d`.
    r"|\bALTER\s+TABLE\b[^;]*?\bRENAME\b(?!\s+CONSTRAINT\b)",
    re.IGNORECASE,
)


def _sql_text(node: ast.expr) -> str:
    """The literal text of a SQL argument: a string, an f-string's literal parts, or `sa.text("...")`."""
    if isinstance(node, ast.Call) and node.args:
        return _sql_text(node.args[0])
    return " ".join(
        part.value for part in ast.walk(node) if isinstance(part, ast.Constant) and isinstance(part.value, str)
    )


def _drops_or_renames(call: ast.Call) -> bool:
    if not isinstance(call.func, ast.Attribute):
        return False
    operation = call.func.attr
    if operation in DROPS_OR_RENAMES:
        return True
    if operation == "alter_column":
        return any(keyword.arg == "new_column_name" for keyword in call.keywords)
    if operation == "execute" and call.args:
        return bool(DESTRUCTIVE_SQL.search(_sql_text(call.args[0])))
    return False


def _module_constant(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value.value if isinstance(node.value, ast.Constant) else None
    return None


def contract_violations(source: str) -> list[str]:
    """What upgrade() drops or renames (`line N: <call>`), unless the migration is marked as a contract step;
    an incomplete mark is a violation of its own."""
    tree = ast.parse(source)
    upgrades = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"]
    found = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for upgrade in upgrades
        for node in ast.walk(upgrade)
        if isinstance(node, ast.Call) and _drops_or_renames(node)
    ]
    if not found or _module_constant(tree, "CONTRACT") is not True:
        return found
    reason = _module_constant(tree, "CONTRACT_REASON")
    if isinstance(reason, str) and reason.strip():
        return []
    return ["CONTRACT = True needs a CONTRACT_REASON: what is removed, and since which release nothing uses it"]


def migration(upgrade: str, downgrade: str = "pass", header: str = "") -> str:
    return f"""
from alembic import op
import sqlalchemy as sa
{header}

def upgrade():
    {upgrade}


def downgrade():
    {downgrade}
"""


MIGRATIONS = sorted(VERSIONS.glob("*.py"))


def test_the_migrations_are_found():
    assert "0001_initial_schema.py" in [path.name for path in MIGRATIONS]


@pytest.mark.parametrize("path", MIGRATIONS, ids=[path.name for path in MIGRATIONS])
def test_every_migration_only_expands_the_schema_unless_marked_as_a_contract_step(path):
    assert contract_violations(path.read_text()) == []


@pytest.mark.parametrize(
    ("upgrade", "violation"),
    [
        ('op.drop_table("runs")', "line 7: op.drop_table('runs')"),
        ('op.drop_column("runs", "trace_context")', "line 7: op.drop_column('runs', 'trace_context')"),
        ('op.rename_table("runs", "executions")', "line 7: op.rename_table('runs', 'executions')"),
        (
            'op.alter_column("runs", "status", new_column_name="state")',
            "line 7: op.alter_column('runs', 'status', new_column_name='state')",
        ),
        (
            'with op.batch_alter_table("runs") as batch_op:\n        batch_op.drop_column("trace_context")',
            "line 8: batch_op.drop_column('trace_context')",
        ),
    ],
    ids=["drop table", "drop column", "rename table", "rename column", "batch drop column"],
)
def test_an_upgrade_that_drops_or_renames_is_refused_naming_the_line(upgrade, violation):
    assert contract_violations(migration(upgrade)) == [violation]


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE runs",
        "ALTER TABLE runs DROP COLUMN trace_context",
        "ALTER TABLE runs DROP trace_context",
        "alter table runs rename to executions",
        "ALTER TABLE runs RENAME COLUMN status TO state",
        "ALTER TABLE runs RENAME status TO state",
    ],
)
def test_raw_sql_that_drops_or_renames_is_refused(sql):
    assert contract_violations(migration(f"op.execute({sql!r})"))
    assert contract_violations(migration(f"op.execute(sa.text({sql!r}))"))


@pytest.mark.parametrize(
    "upgrade",
    [
        'op.add_column("runs", sa.Column("priority", sa.Integer(), nullable=True))',
        'op.create_table("labels", sa.Column("id", sa.Integer(), primary_key=True))',
        'op.alter_column("runs", "status", nullable=True)',
        'op.execute("ALTER TABLE runs ADD COLUMN priority integer")',
        'op.execute("ALTER TABLE runs DROP CONSTRAINT runs_status_check")',
        'op.drop_index("runs_by_status", table_name="runs")',
    ],
    ids=["add column", "create table", "relax a column", "raw add column", "raw drop constraint", "drop index"],
)
def test_an_upgrade_that_only_expands_passes(upgrade):
    assert contract_violations(migration(upgrade)) == []


def test_drops_in_downgrade_are_ignored():
    source = migration(
        'op.add_column("runs", sa.Column("priority", sa.Integer()))', 'op.drop_column("runs", "priority")'
    )

    assert contract_violations(source) == []


def test_a_migration_marked_as_a_contract_step_may_drop():
    header = 'CONTRACT = True\nCONTRACT_REASON = "runs.status: unused since 2026.12, which reads runs.state"'

    assert contract_violations(migration('op.drop_column("runs", "status")', header=header)) == []


@pytest.mark.parametrize(
    "header",
    ["CONTRACT = True", 'CONTRACT = True\nCONTRACT_REASON = "  "', 'CONTRACT = "yes"\nCONTRACT_REASON = "unused"'],
    ids=["no reason", "blank reason", "CONTRACT not True"],
)
def test_an_incomplete_contract_mark_is_refused(header):
    assert contract_violations(migration('op.drop_column("runs", "status")', header=header)) != []
