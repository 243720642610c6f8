"""What a `lakehouse query` may read: the tables of its ref, by name, and nothing else (no file, URL or bucket).

Polars SQL has table functions (`read_parquet('/etc/shadow')`, `read_csv('http://...')`, `read_json`, `read_ipc`,
`read_ndjson`, ...) that read whatever the process can reach, the lakehouse's own S3 credentials included. They are
resolved while Polars plans the query, before a row is collected, so a statement is checked before Polars sees it,
as an allow-list, twice:

* on the tokens (`sql_tokens`, every way of splitting strings and comments): every FROM or JOIN item must be a table
  of the ref (under one of its aliases) or a CTE the statement defines, or a parenthesised subquery or join whose own
  items are checked the same way; a name followed by `(` there is a table function, refused whatever it is called,
  and so is a `read_*` / `scan_*` call anywhere;
* on the relations Polars' own parser finds (`table_identifiers`): each must be such a table or CTE.

Anything else is refused with `QueryOutsideRef` naming it; nothing has been opened then.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import NoReturn

from dagster_lakehouse.cli.sql_tokens import Token, UnclosedText, tokenize
from dagster_lakehouse.lakehouse.errors import QueryOutsideRef

__all__ = ["check_scope"]

FILE_FUNCTION = re.compile(r"(read|scan)_\w*", re.IGNORECASE)
"""Names of Polars' file-reading table functions (read_csv, read_parquet, read_ipc, read_json, read_ndjson) and any
later one: refused wherever they are called."""

EXPRESSION_FROM = frozenset({"extract", "substring", "substr", "trim", "overlay", "position"})
"""Functions whose arguments use FROM as a word (`EXTRACT(YEAR FROM d)`): that FROM starts no table list."""

LIST_END = frozenset(
    "where group having order limit offset fetch union except intersect minus window qualify select into returning "
    "connect start prewhere sample settings format".split()
)
"""Words that end a FROM list at its own depth."""

QUERY_START = frozenset({"select", "with", "values", "from", "table", "explain"})

VARIANTS = [(nested, backslash) for nested in (True, False) for backslash in (False, True)]
"""Every way of reading comments (nested or not) and strings (backslash escapes or not) that a parser might use."""


@dataclass
class _Level:
    """What the tokens at one depth of parentheses are: a FROM list (and whether an item starts next) or not."""

    opener: str | None = None
    from_list: bool = False
    item_next: bool = False
    values: bool = False


class _Refusal:
    """Raises `QueryOutsideRef` for the query's ref."""

    def __init__(self, ref: str, tables: Collection[str]):
        self.ref = ref
        self.tables = sorted(set(tables))

    def __call__(self, reason: str) -> NoReturn:
        raise QueryOutsideRef(self.ref, reason, self.tables)


def check_scope(sql: str, ref: str, aliases: dict[str, str]) -> None:
    """Refuse (`QueryOutsideRef`) a statement that could read anything but the tables `aliases` name (alias -> table
    of `ref`): a table function, a path or URL, or a relation that is neither one of those tables nor a CTE."""
    refuse = _Refusal(ref, aliases.values())
    allowed = {alias.lower() for alias in aliases}
    readings = [tokens for variant in VARIANTS if (tokens := _tokens(sql, *variant)) is not None]
    if not readings:
        refuse("the statement has a string, quoted name or comment that never ends")
    all_ctes: set[str] = set()
    for tokens in readings:
        ctes = _cte_names(tokens)
        for name in sorted(ctes):
            if FILE_FUNCTION.fullmatch(name):
                refuse(f"'{name}' is the name of a table function, not of a CTE")
        _check_calls(tokens, refuse)
        _check_items(tokens, allowed | ctes, refuse)
        all_ctes |= ctes
    _check_relations(sql, allowed | all_ctes, refuse)


def _tokens(sql: str, nested: bool, backslash: bool) -> list[Token] | None:
    """The tokens of one way of reading `sql`, or None if that way leaves a string or comment open."""
    try:
        return tokenize(sql, nested_comments=nested, backslash_escapes=backslash)
    except UnclosedText:
        return None


def _check_calls(tokens: list[Token], refuse: _Refusal) -> None:
    """A call of a file-reading table function anywhere, quoted or not, in any case."""
    for i, token in enumerate(tokens[:-1]):
        if token.kind in ("word", "quoted") and FILE_FUNCTION.fullmatch(token.value) and tokens[i + 1].is_punct("("):
            refuse(f"{token.value}(...) is a table function reading files, URLs or buckets")


def _check_items(tokens: list[Token], allowed: set[str], refuse: _Refusal) -> None:
    """Every FROM and JOIN item: a table of the ref or a CTE by name, or a parenthesised subquery or join."""
    levels = [_Level()]
    i = 0
    while i < len(tokens):
        token, level = tokens[i], levels[-1]
        if token.is_punct("("):
            levels.append(_open(tokens, i, level))
        elif token.is_punct(")"):
            if len(levels) > 1:
                levels.pop()
        elif level.item_next:
            i = _item(tokens, i, level, allowed, refuse)
            continue
        elif token.kind == "word":
            _word(tokens, i, level)
        elif token.is_punct(",") and level.from_list:
            level.item_next = not (level.values and i + 1 < len(tokens) and tokens[i + 1].is_punct("("))
            level.values = level.values and not level.item_next
        elif token.is_punct(";"):
            levels = [_Level()]
        i += 1


def _open(tokens: list[Token], i: int, level: _Level) -> _Level:
    """The level a `(` opens: where a FROM item starts, a subquery, or else a nested join whose items are checked."""
    before = tokens[i - 1] if i else None
    opened = _Level(opener=before.lower if before is not None and before.kind == "word" else None)
    if level.item_next:
        level.item_next = False
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if after is None or not (after.kind == "word" and after.lower in QUERY_START):
            opened.from_list = opened.item_next = True
    return opened


def _word(tokens: list[Token], i: int, level: _Level) -> None:
    word = tokens[i].lower
    if word == "from" and not _expression_from(tokens, i, level):
        level.from_list = level.item_next = True
        level.values = False
    elif word in ("join", "apply"):
        level.from_list = level.item_next = True
        level.values = False
    elif word in LIST_END:
        level.from_list = level.item_next = level.values = False


def _expression_from(tokens: list[Token], i: int, level: _Level) -> bool:
    """Whether this FROM is a word of an expression: `EXTRACT(YEAR FROM d)`, `a IS [NOT] DISTINCT FROM b`."""
    if level.opener in EXPRESSION_FROM:
        return True
    return i >= 2 and tokens[i - 1].is_word("distinct") and tokens[i - 2].is_word("is", "not")


def _item(tokens: list[Token], i: int, level: _Level, allowed: set[str], refuse: _Refusal) -> int:
    """Check the FROM item starting at `i`; the index after its name (`(` items are opened by the caller)."""
    token = tokens[i]
    if token.is_word("lateral", "only"):
        return i + 1
    if token.is_word("values"):
        level.item_next, level.values = False, True
        return i + 1
    if token.kind not in ("word", "quoted"):
        what = f"the string {token.text}" if token.kind == "string" else f"'{token.text}'"
        refuse(f"{what} in FROM is not a table of the ref (paths, URLs and buckets cannot be read)")
    parts, j = [token.value], i + 1
    while j + 1 < len(tokens) and tokens[j].is_punct(".") and tokens[j + 1].kind in ("word", "quoted"):
        parts.append(tokens[j + 1].value)
        j += 2
    name = ".".join(parts)
    if j < len(tokens) and tokens[j].is_punct("("):
        refuse(f"{name}(...) is a table function; only tables can be read")
    if name.lower() not in allowed:
        refuse(f"'{name}' is not a table of the ref")
    level.item_next = False
    return j


def _cte_names(tokens: list[Token]) -> set[str]:
    """Names the statement defines in WITH (`WITH x AS (...)`, `, y (a, b) AS MATERIALIZED (...)`), lower case."""
    names = set()
    for i, token in enumerate(tokens):
        if token.kind not in ("word", "quoted") or i == 0:
            continue
        if not (tokens[i - 1].is_word("with", "recursive") or tokens[i - 1].is_punct(",")):
            continue
        j = i + 1
        if j < len(tokens) and tokens[j].is_punct("("):
            j = _closing(tokens, j) + 1
        if j < len(tokens) and tokens[j].is_word("as"):
            j += 1
            while j < len(tokens) and tokens[j].is_word("not", "materialized"):
                j += 1
            if j < len(tokens) and tokens[j].is_punct("("):
                names.add(token.lower)
    return names


def _closing(tokens: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].is_punct("(") - tokens[j].is_punct(")")
        if depth == 0:
            return j
    return len(tokens)


def _check_relations(sql: str, allowed: set[str], refuse: _Refusal) -> None:
    """Every relation Polars' own parser finds must be a table of the ref or a CTE (a table function shows as its
    name). A statement it cannot parse is left to Polars, which refuses it before reading anything."""
    try:
        from polars._plr import PySQLContext

        found: Iterable[str] = PySQLContext.table_identifiers(sql, include_schema=True, unique=True)
    except (ImportError, AttributeError):
        return
    except Exception:  # noqa: BLE001 - a syntax error: Polars reports it when the query runs
        return
    for name in found:
        if name.lower() not in allowed:
            if FILE_FUNCTION.fullmatch(name.rsplit(".", 1)[-1]):
                refuse(f"{name}(...) is a table function reading files, URLs or buckets")
            refuse(f"'{name}' is not a table of the ref")
