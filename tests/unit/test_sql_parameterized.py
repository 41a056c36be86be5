"""SQL is never built from strings: every ``execute``/``executemany``/``copy`` gets a literal.

A static check (``ast``) over the package and the DAG files. The SQL argument of
``<x>.execute(...)``, ``<x>.executemany(...)`` and ``<x>.copy(...)`` must be one of:

- a string literal (implicit concatenation and parentheses are literals to ``ast`` too);
- a name whose every assignment (in the function, else at module level) is acceptable, with
  ``+=`` of acceptable pieces (a module constant ``_SELECT`` extended by literal clauses);
- ``a if c else b`` / ``a + b`` of acceptable pieces;
- psycopg ``sql.SQL(<literal>)``, ``sql.Identifier``/``sql.Literal``/``sql.Placeholder``,
  ``sql.Composed([...])`` and ``.format()``/``.join()`` on such composables (psycopg quotes
  identifiers and wraps plain values in ``Literal``).

Values go in the parameters. An f-string, ``%``-formatting, ``str.format()``, ``+`` with a
non-literal, a parameter or an attribute is reported as ``path:line``. InfluxQL strings that
go over HTTP (collect/influxdb.py) are not ``execute`` calls and are not this check's
business; ruff's S608 (selected in pyproject.toml) covers string-built SQL anywhere.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SQL_METHODS = frozenset({"execute", "executemany", "copy"})
PSYCOPG_SQL_MODULE = "psycopg.sql"
SAFE_COMPOSABLES = frozenset({"Identifier", "Literal", "Placeholder"})  # quote any argument

# The last resort: calls whose SQL cannot be a literal, each with the reason. Keyed by
# (path relative to the project, the source text of the SQL argument).
ALLOWED: dict[tuple[str, str], str] = {
    # The migration runner executes the project's own sql/NNN_*.sql files, read from disk
    # and checked against their recorded checksum; no input of any kind is part of them.
    ("include/stationflow/state/migrate.py", "m.sql"): "migration files of this repository",
}


def production_files() -> list[Path]:
    files = sorted((ROOT / "include" / "stationflow").rglob("*.py"))
    files += sorted((ROOT / "dags").glob("*.py"))
    return files


# ------------------------------------------------------------------ the checker


class _Module:
    """What one file binds: psycopg.sql aliases, imported modules, scopes' assignments."""

    def __init__(self, tree: ast.Module) -> None:
        self.sql_modules: set[str] = set()  # names bound to psycopg.sql ("sql")
        self.psycopg_modules: set[str] = set()  # names bound to psycopg ("psycopg")
        self.sql_members: dict[str, str] = {}  # local name -> psycopg.sql member ("SQL")
        self.modules: set[str] = set()  # any imported module (copy.copy is not a cursor)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    bound = a.asname or a.name.split(".")[0]
                    self.modules.add(bound)
                    if a.name == "psycopg" or (a.name.startswith("psycopg.") and not a.asname):
                        self.psycopg_modules.add(bound)
                    if a.name == PSYCOPG_SQL_MODULE and a.asname:
                        self.sql_modules.add(a.asname)
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    bound = a.asname or a.name
                    if node.module == "psycopg" and a.name == "sql":
                        self.sql_modules.add(bound)
                    elif node.module == PSYCOPG_SQL_MODULE:
                        self.sql_members[bound] = a.name
        self.module_assigns = _assignments(tree.body, top_level=True)

    def sql_member(self, func: ast.expr) -> str | None:
        """``sql.SQL`` / ``psycopg.sql.SQL`` / ``SQL`` (from psycopg.sql) -> "SQL"."""
        if isinstance(func, ast.Name):
            return self.sql_members.get(func.id)
        if isinstance(func, ast.Attribute):
            owner = func.value
            if isinstance(owner, ast.Name) and owner.id in self.sql_modules:
                return func.attr
            if (
                isinstance(owner, ast.Attribute)
                and owner.attr == "sql"
                and isinstance(owner.value, ast.Name)
                and owner.value.id in self.psycopg_modules
            ):
                return func.attr
        return None


def _assignments(body: list[ast.stmt], *, top_level: bool) -> dict[str, list[ast.AST]]:
    """name -> the statements binding it (Assign/AnnAssign/AugAssign, or anything else that
    binds it: loop targets, ``with ... as``, walrus, parameters, which are not literals)."""
    out: dict[str, list[ast.AST]] = {}
    nodes = body if top_level else [n for stmt in body for n in ast.walk(stmt)]
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        out.setdefault(name.id, []).append(
                            node if isinstance(target, ast.Name) else target
                        )
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            out.setdefault(node.target.id, []).append(node)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            for name in ast.walk(node.target):
                if isinstance(name, ast.Name):
                    out.setdefault(name.id, []).append(node.target)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            for name in ast.walk(node.optional_vars):
                if isinstance(name, ast.Name):
                    out.setdefault(name.id, []).append(node.optional_vars)
        elif isinstance(node, ast.NamedExpr):
            out.setdefault(node.target.id, []).append(node.target)
    return out


def _function_scope(func: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, list[ast.AST]]:
    scope = _assignments(func.body, top_level=False)
    a = func.args
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
        if arg is not None:
            scope.setdefault(arg.arg, []).append(arg)  # a parameter: the caller's string
    return scope


class _Checker:
    def __init__(self, module: _Module, scope: dict[str, list[ast.AST]] | None) -> None:
        self.m = module
        self.scope = scope or {}
        self._resolving: set[str] = set()

    # -- plain SQL text
    def text(self, node: ast.expr) -> str | None:
        """None when ``node`` is literal SQL text (or a composable), else why not."""
        if isinstance(node, ast.Constant):
            return None if isinstance(node.value, str | bytes) else "not a string"
        if isinstance(node, ast.JoinedStr):
            if any(isinstance(v, ast.FormattedValue) for v in node.values):
                return "f-string"
            return None
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Mod):
                return "%-formatting"
            if isinstance(node.op, ast.Add):
                why = self.text(node.left) or self.text(node.right)
                return f"+ with a non-literal ({why})" if why else None
            return "an operator on strings"
        if isinstance(node, ast.IfExp):
            return self.text(node.body) or self.text(node.orelse)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "format":
                if self.composable(node.func.value) is None:
                    return self.composable(node)  # sql.SQL("...").format(...): its arguments
                return ".format() on a string"
            return self.composable(node)
        return f"not a literal ({type(node).__name__}: {ast.unparse(node)})"

    def name(self, name: str) -> str | None:
        if name in self._resolving:
            return None  # ``sql = sql + "..."``: the other assignments decide
        binds = self.scope.get(name) or self.m.module_assigns.get(name)
        if not binds:
            return f"{name!r} is not a literal assigned in this module"
        self._resolving.add(name)
        try:
            for b in binds:
                assigned = isinstance(b, ast.Assign | ast.AnnAssign) and b.value is not None
                if assigned or (isinstance(b, ast.AugAssign) and isinstance(b.op, ast.Add)):
                    why = self.text(b.value)
                elif isinstance(b, ast.arg):
                    why = "a parameter (whatever string the caller passes)"
                else:
                    why = "bound to something that is not a literal"
                if why:
                    return f"{name!r} (line {getattr(b, 'lineno', '?')}): {why}"
            return None
        finally:
            self._resolving.discard(name)

    # -- psycopg.sql composables
    def composable(self, node: ast.expr) -> str | None:
        """None when ``node`` builds a psycopg.sql Composable safely, else why not."""
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.composable(node.left) or self.composable(node.right)
        if not isinstance(node, ast.Call):
            return f"not a literal ({type(node).__name__}: {ast.unparse(node)})"
        member = self.m.sql_member(node.func)
        if member == "SQL":
            if len(node.args) != 1 or node.keywords:
                return "sql.SQL() takes one literal"
            why = self.text(node.args[0])
            return f"sql.SQL() of a non-literal ({why})" if why else None
        if member in SAFE_COMPOSABLES:
            return None
        if member == "Composed":
            return self.parts(node.args[0]) if node.args else None
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
            why = self.composable(node.func.value)
            if why:
                return f".{node.func.attr}() on {why}"
            values = [*node.args, *(k.value for k in node.keywords)]
            if node.func.attr == "join":
                return next((w for v in values if (w := self.parts(v))), None)
            return next((w for v in values if (w := self.argument(v))), None)
        return f"a call that is not psycopg.sql ({ast.unparse(node.func)})"

    def parts(self, node: ast.expr) -> str | None:
        """The pieces given to Composed / join: each a safe composable (or a plain value)."""
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return next((w for e in node.elts if (w := self.argument(e))), None)
        if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            return self.argument(node.elt)
        return self.argument(node)

    def argument(self, node: ast.expr) -> str | None:
        """A value handed to psycopg.sql: a composable must be a safe one; anything else
        is wrapped in ``sql.Literal`` by psycopg (a quoted value, never SQL)."""
        if isinstance(node, ast.Call) and (
            self.m.sql_member(node.func) is not None
            or (isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"))
        ):
            return self.composable(node)
        return None


def _calls(tree: ast.Module) -> Iterator[tuple[ast.Call, ast.FunctionDef | None]]:
    """Every call with its innermost enclosing function."""

    def visit(node: ast.AST, func: ast.FunctionDef | None) -> Iterator:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else func
            if isinstance(child, ast.Call):
                yield child, func
            yield from visit(child, inner)

    yield from visit(tree, None)


def sql_offenders(source: str, path: str = "<sample>") -> list[str]:
    """``path:line: why`` for every execute/executemany/copy whose SQL is not a literal."""
    tree = ast.parse(source, filename=path)
    module = _Module(tree)
    scopes: dict[int, dict[str, list[ast.AST]]] = {}
    out = []
    for call, func in _calls(tree):
        f = call.func
        if not isinstance(f, ast.Attribute) or f.attr not in SQL_METHODS:
            continue
        if isinstance(f.value, ast.Name) and f.value.id in module.modules:
            continue  # copy.copy(x), an imported module's function: not a cursor
        query = (
            call.args[0]
            if call.args
            else next(
                (k.value for k in call.keywords if k.arg in ("query", "statement", "sql")), None
            )
        )
        if query is None:
            continue  # .copy() of an array or a dict: no SQL
        if (path, ast.unparse(query)) in ALLOWED:
            continue
        scope = None
        if func is not None:
            scope = scopes.setdefault(id(func), _function_scope(func))
        why = _Checker(module, scope).text(query)
        if why:
            out.append(f"{path}:{call.lineno}: .{f.attr}() {why}")
    return out


# ------------------------------------------------------------------ the tests


def test_every_execute_in_production_code_gets_literal_sql() -> None:
    files = production_files()
    assert len(files) > 50 and any(p.parent.name == "dags" for p in files)
    offenders, checked = [], 0
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text(encoding="utf-8")
        offenders += sql_offenders(source, rel)
        checked += sum(
            1
            for call, _ in _calls(ast.parse(source))
            if isinstance(call.func, ast.Attribute) and call.func.attr in SQL_METHODS
        )
    assert checked > 50, f"only {checked} execute/copy calls found: is the scan looking?"
    assert not offenders, "SQL built from strings (use parameters or psycopg.sql):\n" + "\n".join(
        offenders
    )


def test_allow_list_entries_still_exist() -> None:
    """An allow-list entry whose call is gone (or changed) must be removed, not kept."""
    for rel, arg in ALLOWED:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        assert any(
            isinstance(c.func, ast.Attribute)
            and c.func.attr in SQL_METHODS
            and c.args
            and ast.unparse(c.args[0]) == arg
            for c, _ in _calls(tree)
        ), f"{rel}: no call with SQL {arg!r} any more: remove it from ALLOWED"


BAD = """
import psycopg
from psycopg import sql

TABLE = "stationflow.fragment"

def bad(conn, station, table, cols):
    conn.execute(f"SELECT * FROM fragment WHERE station = '{station}'")      # 8
    conn.execute("SELECT * FROM fragment WHERE station = '%s'" % station)    # 9
    conn.execute("SELECT * FROM {} WHERE id = %s".format(table), (1,))       # 10
    conn.execute("SELECT * FROM " + table)                                   # 11
    cur = conn.cursor()
    cur.executemany(table, [(1,)])                                           # 13
    q = "SELECT 1"
    q += " WHERE x = " + station
    conn.execute(q)                                                          # 16
    with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:     # 17
        pass
    conn.execute(sql.SQL(f"SELECT * FROM {table}"))                          # 19
    conn.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(table)))         # 20
    conn.execute(query=f"DELETE FROM {table}")                               # 21
    conn.execute(psycopg.sql.SQL("SELECT " + station))                       # 22
    conn.execute("SELECT 1" if station else f"SELECT {station}")             # 23
    conn.execute(TABLE + station)                                            # 24
"""

GOOD = '''
import copy
import psycopg
from psycopg import sql
from psycopg.sql import SQL, Identifier

_SELECT = """
SELECT * FROM stationflow.fragment
"""
_COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in ("a", "b"))

def good(conn, station, table, since, rows, frame):
    conn.execute("SELECT * FROM fragment WHERE station = %s", (station,))
    conn.execute(
        "SELECT * FROM fragment"
        " WHERE station = %(s)s",
        {"s": station},
    )
    conn.execute(_SELECT)
    q = _SELECT
    if since:
        q += " AND t > %(since)s"
    conn.execute(q, {"since": since})
    conn.execute(sql.SQL("SELECT * FROM {} WHERE x = {}").format(sql.Identifier(table), station))
    conn.execute(SQL("DROP DATABASE {}").format(Identifier(table)))
    conn.execute(psycopg.sql.SQL("SELECT {}").format(psycopg.sql.Literal(station)))
    with conn.cursor().copy(sql.SQL("COPY raw ({}) FROM STDIN").format(_COLUMNS)) as cp:
        pass
    conn.execute(sql.Composed([sql.SQL("SELECT "), sql.Identifier(table)]))
    conn.cursor().executemany("INSERT INTO t VALUES (%s)", rows)
    snapshot = copy.copy(frame)
    same = frame.copy()
    # InfluxQL over HTTP: not an execute call (collect/influxdb.py)
    influx_q = f"SELECT * FROM {table} WHERE time >= '{since}'"  # noqa: S608
    return session.get("/query", params={"q": influx_q}), snapshot, same
'''


def test_the_checker_flags_string_built_sql() -> None:
    found = sql_offenders(textwrap.dedent(BAD), "bad.py")
    lines = sorted(int(f.split(":")[1]) for f in found)
    assert lines == [8, 9, 10, 11, 13, 16, 17, 19, 20, 21, 22, 23, 24], "\n".join(found)
    assert all(f.startswith("bad.py:") for f in found)
    assert "f-string" in found[0] and "%-formatting" in found[1] and ".format()" in found[2]


def test_the_checker_accepts_literals_parameters_and_psycopg_sql() -> None:
    assert sql_offenders(textwrap.dedent(GOOD), "good.py") == []


def test_influxql_over_http_is_not_flagged() -> None:
    """The InfluxQL f-strings exist (and carry their noqa), yet they are no execute call."""
    path = ROOT / "include" / "stationflow" / "collect" / "influxdb.py"
    source = path.read_text(encoding="utf-8")
    built = [ln for ln in source.splitlines() if "SELECT * FROM {" in ln]
    assert built and all("noqa: S608" in ln for ln in built), built
    assert sql_offenders(source, "influxdb.py") == []


def _ruff_lint_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"][
        "lint"
    ]


def _selects(codes: list[str], rule: str) -> bool:
    return any(rule.startswith(code) for code in codes)


def test_ruff_selects_s608_for_production_code() -> None:
    lint = _ruff_lint_config()
    assert _selects(lint.get("select", []), "S608"), lint.get("select")
    assert not _selects(lint.get("ignore", []), "S608"), lint.get("ignore")
    for pattern, codes in lint.get("per-file-ignores", {}).items():
        if not pattern.startswith("tests/"):
            assert not _selects(codes, "S608"), f"S608 ignored for {pattern}"


def test_ruff_s608_fails_string_built_sql() -> None:
    """The project's own ruff configuration reports an f-string query (S608)."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    code = 'def f(conn, t):\n    return conn.execute(f"SELECT * FROM x WHERE t = {t}")\n'
    run = subprocess.run(
        [str(ruff), "check", "--no-cache", "--output-format", "concise",
         "--stdin-filename", "include/stationflow/s608_probe.py", "-"],
        input=code, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1 and "S608" in run.stdout, run.stdout + run.stderr
