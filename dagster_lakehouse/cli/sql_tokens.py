"""A SQL tokenizer that finds where Polars' SQL parser sees words, quoted names, strings and comments.

`lakehouse query` checks what a statement reads before Polars runs it (`sql_scope`), so it must split the text as
Polars does (sqlparser's generic dialect): `--` and nested `/* */` comments, `'...'` strings with `''` and no backslash
escapes, `E'...'` strings with them, `$$...$$` / `$tag$...$tag$` strings, and `"..."` / `` `...` `` quoted names. Where a
rule could differ between versions (comment nesting, backslashes), `tokenize` takes it as an option and the checker
runs every variant, so no way of hiding text in a string or comment fools it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Token", "UnclosedText", "tokenize"]

Kind = Literal["word", "quoted", "string", "number", "punct"]

_WORD = re.compile(r"[^\W\d][\w$#@]*")
_NUMBER = re.compile(r"\d[\w.]*|\.\d[\w.]*")
_DOLLAR = re.compile(r"\$([^\W\d]\w*)?\$")


@dataclass(frozen=True)
class Token:
    """One token: its kind, its text as written, and its value (a quoted name or string without its quotes)."""

    kind: Kind
    text: str
    value: str
    at: int

    @property
    def lower(self) -> str:
        return self.value.lower()

    def is_word(self, *words: str) -> bool:
        """An unquoted word (keyword or name) among `words` (lower case)."""
        return self.kind == "word" and self.value.lower() in words

    def is_punct(self, char: str) -> bool:
        return self.kind == "punct" and self.value == char


class UnclosedText(ValueError):
    """A string, quoted name or comment that never ends."""


def _quoted(sql: str, start: int, quote: str, backslash: bool) -> tuple[int, str]:
    """The end of the quoted text opening at `start` (doubled quotes, and with `backslash` escapes) and its value."""
    i, value = start + 1, []
    while i < len(sql):
        char = sql[i]
        if backslash and char == "\\" and i + 1 < len(sql):
            value.append(sql[i + 1])
            i += 2
            continue
        if char == quote:
            if sql.startswith(quote, i + 1):
                value.append(quote)
                i += 2
                continue
            return i + 1, "".join(value)
        value.append(char)
        i += 1
    raise UnclosedText(f"{quote} at position {start} is never closed")


def _comment_end(sql: str, start: int, nested: bool) -> int:
    depth, i = 1, start + 2
    while i < len(sql):
        if sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0 or not nested:
                return i
            continue
        if nested and sql.startswith("/*", i):
            depth += 1
            i += 2
            continue
        i += 1
    raise UnclosedText(f"the comment at position {start} is never closed")


def tokenize(sql: str, *, nested_comments: bool = True, backslash_escapes: bool = False) -> list[Token]:
    """The tokens of `sql`, comments and whitespace left out; `UnclosedText` for text that never ends."""
    tokens: list[Token] = []
    i = 0
    while i < len(sql):
        char = sql[i]
        if char.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _comment_end(sql, i, nested_comments)
        elif char == "'":
            prefix = tokens[-1] if tokens and tokens[-1].at + len(tokens[-1].text) == i else None
            escapes = backslash_escapes or (prefix is not None and prefix.is_word("e"))
            end, value = _quoted(sql, i, "'", escapes)
            tokens.append(Token("string", sql[i:end], value, i))
            i = end
        elif char in "\"`":
            end, value = _quoted(sql, i, char, False)
            tokens.append(Token("quoted", sql[i:end], value, i))
            i = end
        elif char == "$" and (match := _DOLLAR.match(sql, i)):
            tag = match.group(0)
            close = sql.find(tag, match.end())
            if close < 0:
                raise UnclosedText(f"{tag} at position {i} is never closed")
            tokens.append(Token("string", sql[i : close + len(tag)], sql[match.end() : close], i))
            i = close + len(tag)
        elif match := _WORD.match(sql, i):
            tokens.append(Token("word", match.group(0), match.group(0), i))
            i = match.end()
        elif match := _NUMBER.match(sql, i):
            tokens.append(Token("number", match.group(0), match.group(0), i))
            i = match.end()
        else:
            tokens.append(Token("punct", char, char, i))
            i += 1
    return tokens
