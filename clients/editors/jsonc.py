"""JSON with comments, edited in place: a parser that keeps every value's span.

Editors' MCP files are JSON or JSONC (VS Code's and Zed's settings allow
`//` and `/* */` comments and trailing commas). Loading and dumping such a
file would drop its comments and change its layout, so nothing here ever
re-serialises a document: `parse` finds where each value starts and ends in
the text, and the edits (`set_member`, `remove_member`) replace or insert
text at those offsets, leaving every other character as it was.

Offsets are indices into the decoded `str`; the caller reads and writes the
file as UTF-8 (a BOM, if any, is kept as the first character and skipped by
the parser).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
_LINE_INDENT = re.compile(r"[ \t]*")


class JsoncError(ValueError):
    """The text is not JSON (with comments); says where, 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line = line
        self.column = column


@dataclass
class Node:
    """A value and where it is: `text[start:end]` is exactly its source."""

    kind: str  # object, array, string, number, true, false, null
    start: int
    end: int
    value: Any = None  # scalars: the Python value
    members: list[Member] = field(default_factory=list)  # objects
    items: list[Node] = field(default_factory=list)  # arrays

    def get(self, key: str) -> Node | None:
        """The value of the last member named `key` (the one JSON.parse keeps)."""
        member = self.member(key)
        return member.value if member else None

    def member(self, key: str) -> Member | None:
        if self.kind != "object":
            return None
        for member in reversed(self.members):
            if member.key == key:
                return member
        return None

    def plain(self) -> Any:
        """The value as Python data (later duplicate keys win, like JSON.parse)."""
        if self.kind == "object":
            return {member.key: member.value.plain() for member in self.members}
        if self.kind == "array":
            return [item.plain() for item in self.items]
        return self.value


@dataclass
class Member:
    key: str
    key_start: int  # where the key's opening quote is
    value: Node


@dataclass
class Document:
    text: str
    root: Node | None  # None: the text holds no value (empty, or comments only)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1 if text.startswith("\ufeff") else 0

    def error(self, message: str, offset: int | None = None) -> JsoncError:
        line, column = _position(self.text, self.pos if offset is None else offset)
        return JsoncError(message, line, column)

    def skip(self) -> None:
        """Whitespace and comments."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            char = text[self.pos]
            if char in " \t\r\n":
                self.pos += 1
            elif text.startswith("//", self.pos):
                newline = text.find("\n", self.pos)
                self.pos = n if newline < 0 else newline
            elif text.startswith("/*", self.pos):
                close = text.find("*/", self.pos + 2)
                if close < 0:
                    raise self.error("a /* comment is never closed")
                self.pos = close + 2
            else:
                return

    def value(self, depth: int = 0) -> Node:
        if depth > 512:
            raise self.error("nested too deeply")
        self.skip()
        if self.pos >= len(self.text):
            raise self.error("the text ends where a value should be")
        char = self.text[self.pos]
        if char == "{":
            return self.object(depth)
        if char == "[":
            return self.array(depth)
        if char == '"':
            start, end, text = self.string()
            return Node("string", start, end, text)
        match = _NUMBER.match(self.text, self.pos)
        if match and match.end() > self.pos:
            self.pos = match.end()
            number = json.loads(match.group())
            return Node("number", match.start(), match.end(), number)
        for word, literal in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                start = self.pos
                self.pos += len(word)
                return Node(word, start, self.pos, literal)
        raise self.error(f"unexpected {char!r}")

    def string(self) -> tuple[int, int, str]:
        """The string at pos: its span and value; pos moves past it."""
        text, start = self.text, self.pos
        index = start + 1
        while True:
            if index >= len(text):
                raise self.error("a string is never closed", start)
            char = text[index]
            if char == "\\":
                index += 2
            elif char == '"':
                break
            elif char == "\n":
                raise self.error("a line break inside a string", index)
            else:
                index += 1
        end = index + 1
        try:
            value = json.loads(text[start:end])
        except json.JSONDecodeError as exc:
            raise self.error(f"bad string: {exc.msg}", start + exc.pos) from None
        self.pos = end
        assert isinstance(value, str)
        return start, end, value

    def object(self, depth: int) -> Node:
        node = Node("object", self.pos, -1)
        self.pos += 1
        while True:
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                node.end = self.pos
                return node
            if self.pos >= len(self.text) or self.text[self.pos] != '"':
                raise self.error('expected a "key" or }')
            key_start, _, key = self.string()
            self.skip()
            if self.pos >= len(self.text) or self.text[self.pos] != ":":
                raise self.error("expected : after the key")
            self.pos += 1
            node.members.append(Member(key, key_start, self.value(depth + 1)))
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
            elif self.pos >= len(self.text) or self.text[self.pos] != "}":
                raise self.error("expected , or } after a value")

    def array(self, depth: int) -> Node:
        node = Node("array", self.pos, -1)
        self.pos += 1
        while True:
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                node.end = self.pos
                return node
            node.items.append(self.value(depth + 1))
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
            elif self.pos >= len(self.text) or self.text[self.pos] != "]":
                raise self.error("expected , or ] after a value")


def parse(text: str) -> Document:
    """The document with every value's span; JsoncError (line, column) if it is not one."""
    parser = _Parser(text)
    parser.skip()
    if parser.pos >= len(text):
        return Document(text, None)
    root = parser.value()
    parser.skip()
    if parser.pos < len(text):
        raise parser.error("more text after the end of the document")
    return Document(text, root)


# --- Layout -----------------------------------------------------------------------------


def newline_of(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _line_start(text: str, offset: int) -> int:
    return text.rfind("\n", 0, offset) + 1


def _indent_at(text: str, offset: int) -> str:
    """The indentation of the line `offset` is on."""
    start = _line_start(text, offset)
    match = _LINE_INDENT.match(text, start)
    return match.group() if match else ""


def _starts_line(text: str, offset: int) -> bool:
    return text[_line_start(text, offset) : offset].strip(" \t") == ""


def indent_unit(document: Document) -> str:
    """The file's indentation step, from its first indented member (two spaces if none)."""
    text = document.text

    def first_indented(node: Node) -> str | None:
        if node.kind == "object":
            children = [(m.key_start, m.value) for m in node.members]
        else:
            children = [(item.start, item) for item in node.items]
        for offset, child in children:
            if _starts_line(text, offset):
                outer = _indent_at(text, node.start)
                inner = _indent_at(text, offset)
                if inner.startswith(outer) and len(inner) > len(outer):
                    return inner[len(outer) :]
            found = first_indented(child) if child.kind in ("object", "array") else None
            if found:
                return found
        return None

    if document.root is not None and document.root.kind in ("object", "array"):
        found = first_indented(document.root)
        if found:
            return found
    return "  "


def render(value: Any, unit: str, base: str, newline: str, *, compact: bool = False) -> str:
    """`value` as JSON laid out like the file: `unit` per level, continuation lines
    starting with `base`; on one line when `compact`."""
    one_line = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if compact:
        return one_line
    if (
        isinstance(value, list)
        and len(one_line) <= 72
        and not any(isinstance(item, (dict, list)) for item in value)
    ):
        return one_line  # a short list of strings reads best on one line
    if isinstance(value, dict) and value:
        inner = base + unit
        members = [
            f"{json.dumps(key, ensure_ascii=False)}: {render(item, unit, inner, newline)}"
            for key, item in value.items()
        ]
        return "{" + newline + inner + ("," + newline + inner).join(members) + newline + base + "}"
    if isinstance(value, list) and value:
        inner = base + unit
        items = [render(item, unit, inner, newline) for item in value]
        return "[" + newline + inner + ("," + newline + inner).join(items) + newline + base + "]"
    return one_line


# --- Edits --------------------------------------------------------------------------------


def _skip_trivia(text: str, offset: int) -> int:
    parser = _Parser(text)
    parser.pos = offset
    parser.skip()
    return parser.pos


def _end_of_line(text: str, offset: int) -> int:
    """From `offset`, past spaces and comments on the same line: where its newline
    is (or where something else starts)."""
    index = offset
    while index < len(text):
        char = text[index]
        if text.startswith("\r\n", index):
            return index
        if char in " \t\r":
            index += 1
        elif text.startswith("//", index):
            newline = text.find("\n", index)
            if newline < 0:
                return len(text)
            return newline - 1 if text[newline - 1] == "\r" else newline
        elif text.startswith("/*", index):
            close = text.find("*/", index + 2)
            if close < 0 or "\n" in text[index:close]:
                return index
            index = close + 2
        else:
            return index
    return index


def replace_value(text: str, node: Node, new_text: str) -> str:
    return text[: node.start] + new_text + text[node.end :]


def value_text(document: Document, node: Node) -> str:
    return document.text[node.start : node.end]


def insert_member(document: Document, obj: Node, key: str, value: Any) -> str:
    """The text with `"key": value` added as `obj`'s last member, laid out like its
    neighbours (their indentation, the file's line ends, a trailing comma if they
    use one)."""
    text = document.text
    newline = newline_of(text)
    unit = indent_unit(document)
    key_json = json.dumps(key, ensure_ascii=False)
    if not obj.members:
        inner = text[obj.start + 1 : obj.end - 1]
        outer = _indent_at(text, obj.start)
        if "\n" not in inner and inner.strip() == "":
            body = render(value, unit, outer + unit, newline)
            new = "{" + newline + outer + unit + f"{key_json}: {body}" + newline + outer + "}"
            return text[: obj.start] + new + text[obj.end :]
        # A multi-line empty object (perhaps with comments): the member goes after the {.
        closing = _indent_at(text, obj.end - 1)
        indent = closing + unit
        body = render(value, unit, indent, newline)
        at = obj.start + 1
        return text[:at] + newline + indent + f"{key_json}: {body}" + text[at:]
    last = obj.members[-1]
    after = _skip_trivia(text, last.value.end)
    trailing_comma = after < len(text) and text[after] == ","
    if not _starts_line(text, last.key_start):
        # One line: add it on the same line.
        body = render(value, unit, "", newline, compact=True)
        if trailing_comma:
            return text[: after + 1] + f" {key_json}: {body}," + text[after + 1 :]
        at = last.value.end
        return text[:at] + f", {key_json}: {body}" + text[at:]
    indent = _indent_at(text, last.key_start)
    body = render(value, unit, indent, newline)
    member = newline + indent + f"{key_json}: {body}"
    if trailing_comma:
        at = _end_of_line(text, after + 1)
        return text[:at] + member + "," + text[at:]
    at = _end_of_line(text, last.value.end)
    return text[: last.value.end] + "," + text[last.value.end : at] + member + text[at:]


def remove_member(document: Document, obj: Node, member: Member) -> str:
    """The text without `member` (its key, value, comma and line), the rest untouched."""
    text = document.text
    index = next(i for i, m in enumerate(obj.members) if m is member)
    after = _skip_trivia(text, member.value.end)
    own_comma = after < len(text) and text[after] == ","
    if index > 0:
        previous = obj.members[index - 1]
        previous_comma = _skip_trivia(text, previous.value.end)
        start = _end_of_line(text, previous_comma + 1)
        if own_comma:
            end = _end_of_line(text, after + 1)
            return text[:start] + text[end:]
        # The last member: its predecessor's comma goes too.
        if not _starts_line(text, member.key_start):
            return text[:previous_comma] + text[member.value.end :]
        return (
            text[:previous_comma]
            + text[previous_comma + 1 : start]
            + text[_end_of_line(text, member.value.end) :]
        )
    start = _end_of_line(text, obj.start + 1)
    if own_comma:
        end = _end_of_line(text, after + 1)
        return text[:start] + text[end:]
    # The only member.
    end = _end_of_line(text, member.value.end)
    return text[:start] + text[end:]


def lookup(document: Document, path: tuple[str, ...]) -> Node | None:
    node = document.root
    for key in path:
        if node is None or node.kind != "object":
            return None
        node = node.get(key)
    return node


def ensure_object(document: Document, path: tuple[str, ...]) -> tuple[str, bool]:
    """The text with an object at `path` (created empty where missing); whether it
    changed. ValueError if something else is in the way."""
    if document.root is None:
        newline = newline_of(document.text) if document.text else "\n"
        value: Any = {}
        for key in reversed(path):
            value = {key: value}
        body = render(value, "  ", "", newline)
        text = document.text
        sep = "" if not text or text.endswith(("\n", "\r")) else newline
        return text + sep + body + newline, True
    node = document.root
    for depth, key in enumerate(path):
        if node.kind != "object":
            where = ".".join(path[:depth]) or "the top level"
            raise ValueError(f"{where} is not an object")
        child = node.get(key)
        if child is None:
            value = {}
            for inner in reversed(path[depth + 1 :]):
                value = {inner: value}
            return insert_member(document, node, key, value), True
        node = child
    if node.kind != "object":
        raise ValueError(f"{'.'.join(path)} is not an object")
    return document.text, False


def set_member(document: Document, obj: Node, key: str, value: Any) -> str:
    """The text with `obj[key]` holding `value`: the old value's text replaced where
    it is (laid out at its place), or a new member added."""
    member = obj.member(key)
    if member is None:
        return insert_member(document, obj, key, value)
    text = document.text
    compact = not _starts_line(text, member.key_start)
    rendered = render(
        value,
        indent_unit(document),
        _indent_at(text, member.key_start),
        newline_of(text),
        compact=compact,
    )
    return replace_value(text, member.value, rendered)
