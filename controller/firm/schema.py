"""pydantic's validation errors in firm's words: each names the field (``guards.cpu.max``,
``requests[3][1]``), the value given and what the field wants, never pydantic's own phrases
("Extra inputs are not permitted", "Input should be a valid number") or its internal locations
(``function-after[...]``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ansible_collections.firm.core.plugins.module_utils import redis_auth
from ansible_collections.firm.core.plugins.module_utils.errors import FirmError
from firm.textfiles import MAX_TEXT_FILE_BYTES, TextFileError, read_small_file
from firm.urls import redact_url

MAX_SHOWN = 5
"""Errors named in one message; the rest are counted."""


_TYPE_TAGS = frozenset({"float", "int", "str", "bool", "none", "bytes", "list", "dict", "tuple", "nullable"})
"""Parts of an error's location that name a member of a union or a validator, not a field."""


def _is_field(part: str) -> bool:
    return not (
        part in _TYPE_TAGS
        or "[" in part
        or part.startswith(("function-", "constrained-", "lax-", "strict-", "_"))
        or part[:1].isupper()
    )


def field_path(loc: Sequence[int | str]) -> str:
    """``('requests', 3, 1)`` -> ``requests[3][1]``; pydantic's names of union members and
    validators (``float``, ``literal[...]``, ``function-after[...]``) are left out."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "":  # an empty key of a mapping
            text += "['']"
        elif _is_field(part):
            text += f".{part}" if text else part
    return text


def shown(value: Any) -> str:
    """A value for a message: a URL's password redacted (:func:`firm.urls.redact_url`), at most 60
    characters."""
    if isinstance(value, str) and "@" in value:
        value = redact_url(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> str:
    """A bound as written: 3600000 (not 3.6e+06), 0.5, 1e+300."""
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) < 1e16 else f"{value:g}"
    return str(value)


def _characters(count: Any) -> str:
    return f"{count} character{'' if count == 1 else 's'}"


def _entries(count: Any) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def _known(model: type[BaseModel] | None, loc: Sequence[int | str]) -> list[str]:
    """The field names of the (nested) model that ``loc`` points into, when it can be followed."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or not isinstance(part, str):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _wants(error: ErrorDetails) -> str | None:
    """What the field wants, in words; None when pydantic's message is the only explanation."""
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    return {
        "finite_number": "a finite number",
        "greater_than": f"above {_number(ctx.get('gt'))}",
        "greater_than_equal": f"at least {_number(ctx.get('ge'))}",
        "less_than": f"below {_number(ctx.get('lt'))}",
        "less_than_equal": f"at most {_number(ctx.get('le'))}",
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "string_type": "text",
        "string_too_short": f"text of at least {_characters(ctx.get('min_length'))}",
        "string_too_long": f"text of at most {_characters(ctx.get('max_length'))}",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "none_required": "null",
        "list_type": "a list",
        "tuple_type": "a list",
        "dict_type": "a mapping of names to values",
        "model_type": "a mapping of names to values",
        "model_attributes_type": "a mapping of names to values",
        "too_short": f"at least {_entries(ctx.get('min_length'))}",
        "too_long": f"at most {_entries(ctx.get('max_length'))}",
        "literal_error": f"one of {ctx.get('expected')}",
        "enum": f"one of {ctx.get('expected')}",
    }.get(error["type"])


def problems(errors: Sequence[ErrorDetails], model: type[BaseModel] | None = None) -> list[str]:
    """Each field's problem as ``FIELD is VALUE; give WHAT`` (the members of a union that all refused
    a value make one problem: ``give a number or one of 'unlimited'``)."""
    by_field: dict[str, list[ErrorDetails]] = {}
    for error in errors:
        by_field.setdefault(field_path(error["loc"]) or "the document", []).append(error)
    out = []
    for where, group in by_field.items():
        first = group[0]
        if first["type"] == "extra_forbidden":
            known = _known(model, first["loc"])
            out.append(
                f"{where} is not a known field" + (f" (the fields are {', '.join(known)})" if known else "")
            )
            continue
        if first["type"] == "missing":
            out.append(f"{where} is missing")
            continue
        wants = [_wants(e) for e in group]
        if all(w is not None for w in wants):
            unique = list(dict.fromkeys(w for w in wants if w is not None))
            out.append(f"{where} is {shown(first.get('input'))}; give {' or '.join(unique)}")
        else:
            message = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            out.append(f"{where} is {shown(first.get('input'))}: {message}")
    return out


def problem(error: ErrorDetails, model: type[BaseModel] | None = None) -> str:
    """One error as ``FIELD is VALUE: what it must be``."""
    return problems([error], model)[0]


def describe(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every problem of ``exc`` (at most :data:`MAX_SHOWN`, then how many more), joined by ``; ``.
    ``model``: the model validated, so that an unknown field's message lists the known ones."""
    listed = problems(exc.errors(), model)
    if len(listed) > MAX_SHOWN:
        listed = [*listed[:MAX_SHOWN], f"and {len(listed) - MAX_SHOWN} more"]
    return "; ".join(listed)


def yaml_position(exc: yaml.YAMLError) -> str:
    """Where a YAML error is, as `` (line N: problem)``, or "" when PyYAML gives no position (for
    messages like ``f"{path} is not YAML{yaml_position(exc)}"``). A tab where YAML allows none (at the
    start of a line: YAML indents with spaces only) is said so, with the fix."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ""
    problem = str(getattr(exc, "problem", None) or "malformed")
    if "'\\t'" in problem:
        problem = "a tab indents it, and YAML indents with spaces only; replace the tab with spaces"
    return f" (line {mark.line + 1}: {problem})"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading plain numbers as YAML 1.2 does: ``1e9`` and ``2.5e-3`` are
    numbers (YAML 1.1, which PyYAML follows, reads an exponent without a dot and a sign as text),
    ``0o50`` is octal 40 and ``0x28`` hexadecimal (YAML 1.1 reads ``0o50`` as text), ``1:30`` is text
    (YAML 1.1 reads it as 90, base 60), and a whole number that starts with 0 where YAML 1.1 and 1.2
    disagree (``050``: octal 40 or 50) is refused with both readings; a tab after a key's colon
    separates as a space does (YAML 1.2; PyYAML refuses it); and refusing a mapping that names a key
    twice (YAML 1.2 requires unique keys; PyYAML keeps the last silently, so ``port: 8080`` then
    ``port: 8081`` would run on 8081 unseen)."""

    def _within_line(self) -> bool:
        """Whether something other than blanks precedes the reading position on its line (a tab
        there separates tokens; at the start of a line it would indent, which YAML forbids)."""
        start = max(0, self.pointer - self.column)
        return bool(self.buffer[start : self.pointer].strip(" \t"))

    def scan_to_next_token(self) -> None:
        """PyYAML's, skipping tabs as well as spaces within a line (``port:<TAB>8080``, a tab before a
        comment): YAML 1.2 separates tokens by either. A tab that would indent a line is left to
        PyYAML, which refuses it (:func:`yaml_position` says so)."""
        if self.index == 0 and self.peek() == "\ufeff":
            self.forward()
        found = False
        while not found:
            while self.peek() == " " or (self.peek() == "\t" and self._within_line()):
                self.forward()
            if self.peek() == "#":
                while self.peek() not in "\0\r\n\x85\u2028\u2029":
                    self.forward()
            if self.scan_line_break():  # type: ignore[no-untyped-call]
                if not self.flow_level:
                    self.allow_simple_key = True
            else:
                found = True

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """A whole number as YAML 1.2 reads it (``0o`` octal, ``0x`` hexadecimal; PyYAML's ``0b``
        binary and ``1_000`` kept); one that starts with 0 and reads differently as octal (YAML 1.1)
        and as decimal (YAML 1.2) is refused naming both."""
        text = str(self.construct_scalar(node))
        plain = text.replace("_", "")
        sign = -1 if plain.startswith("-") else 1
        body = plain.lstrip("+-")
        try:
            for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
                if body.startswith(prefix):
                    return sign * int(body[2:], base)
            value = int(body, 10)
        except ValueError:  # only with an explicit tag (!!int abc): the resolver's numbers all parse
            raise yaml.constructor.ConstructorError(
                None, None, f"{text!r} is not a whole number", node.start_mark
            ) from None
        if len(body) > 1 and body[0] == "0" and set(body) <= set("01234567") and int(body, 8) != value:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the number {text} starts with 0, which YAML 1.1 reads as octal ({sign * int(body, 8)}) "
                f"and YAML 1.2 as {sign * value}; write {sign * value}, or {'-' if sign < 0 else ''}"
                f"0o{body.lstrip('0')} for octal",
                node.start_mark,
            )
        return sign * value

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class says so
                    break
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"the key {key!r} is given twice",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        """A float, refusing a number too large for one (``1e400``), which PyYAML reads as infinity
        and a schema would then report as ``inf``, a value the user never wrote. ``.inf`` and ``.nan``,
        written as such, stay (the schema decides whether it takes them)."""
        value = float(super().construct_yaml_float(node))
        if not math.isfinite(value) and not node.value.lstrip("+-").startswith("."):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the number {node.value} is out of range (numbers go to ±1.8e308)",
                node.start_mark,
            )
        return value

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


MAX_YAML_VALUES = 100_000
"""The most values (scalars, lists and mappings) a configuration file may hold once its aliases
(``*name``) are expanded: far beyond any real configuration, far below what ten nested aliases of
nine (a "billion laughs" of 300 bytes) would make the schema walk."""


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it beyond :data:`MAX_YAML_VALUES` values, or that
    contains itself (``&a [*a]``). Counted on the node graph, each shared node once, so that the
    check is linear in the file's size. Raises :class:`yaml.constructor.ConstructorError` with the
    node's line."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias (*name) refers to a value that contains it", node.start_mark
            )
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        if total > MAX_YAML_VALUES:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"aliases (*name) expand this value to more than {MAX_YAML_VALUES} values",
                node.start_mark,
            )
        sizes[key] = total
        return total

    size(root)


# YAML 1.2's core schema has no timestamps: a date stays the text it is (PyYAML's YAML 1.1 reading
# would turn 2017-02-30 into a ValueError and 2017-02-28 into a date no setting takes).
# Numbers are resolved below, as YAML 1.2 does (no base 60: ``1:30`` stays text).
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"^[-+]?(?:0b[0-1_]*[0-1][0-1_]*|0o[0-7_]*[0-7][0-7_]*|0x[0-9a-fA-F_]*[0-9a-fA-F][0-9a-fA-F_]*"
        r"|[0-9][0-9_]*)$"
    ),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """A YAML document as Python values (PyYAML's safe loader; plain numbers with an exponent, such as
    ``1e9``, are numbers, while quoted ones stay text, so that a schema with strict numbers can refuse
    ``"40"`` and still take ``4e1``). Raises :class:`yaml.YAMLError` (and RecursionError for nesting
    deeper than Python's stack)."""
    return yaml.load(text, Loader=_Loader)


def yaml_kind(value: object) -> str:
    """What a YAML value is, in words: ``a list``, ``the number 5``, ``the text 'x'``."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bool):
        return f"the value {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {shown(value)}"
    return f"a {type(value).__name__}"


def read_yaml_mapping(path: str | Path, *, what: str, doc: str, error: type[FirmError]) -> dict[str, Any]:
    """The settings in the YAML file ``path`` (:func:`load_yaml`; an empty file or one of comments
    only is ``{}``), for a configuration called ``what`` in messages (e.g. ``the loop
    configuration``) and documented in ``doc`` (e.g. ``docs/control-loop.md``).

    Raises ``error`` naming the file and the fix when it is a directory, a device, a pipe or
    another file that is not regular, holds more than ``MAX_TEXT_FILE_BYTES``, cannot be read, is
    not UTF-8, is not YAML (with the line, a key given twice included), nests too deeply, or holds
    something else than a mapping."""
    if Path(path).is_dir():
        raise error(f"{what} {path} is a directory", fix="give the YAML file itself")
    try:
        data = load_yaml(read_small_file(path).decode("utf-8"))
    except TextFileError as exc:
        raise error(
            f"{what} {path} {exc}",
            fix=f"give the YAML file of settings itself, a regular file of at most {MAX_TEXT_FILE_BYTES} "
            f"bytes (see {doc})",
        ) from None
    except OSError as exc:
        raise error(
            f"cannot read {what} {path}: {exc.strerror or type(exc).__name__}",
            fix=f"give a readable YAML file (see {doc})",
        ) from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not UTF-8 text (byte offset {exc.start})", fix="save it as UTF-8 YAML"
        ) from None
    except yaml.YAMLError as exc:
        raise error(
            f"{what} {path} is not YAML{yaml_position(exc)}",
            fix=f"give a YAML mapping of settings, one `setting: value` per line (see {doc})",
        ) from None
    except RecursionError:
        raise error(
            f"{what} {path} nests too deeply", fix=f"give a YAML mapping of settings (see {doc})"
        ) from None
    if data is None:  # empty, or comments only
        return {}
    if not isinstance(data, dict):
        raise error(
            f"{what} {path} holds {yaml_kind(data)}, not a mapping of settings",
            fix=f"write one `setting: value` per line (see {doc})",
        )
    return data


MAX_REDIS_DB = redis_auth.MAX_DB
"""The largest database number a Redis URL may name (Redis keeps it in a C int)."""

REDIS_URL_HINT = redis_auth.URL_FIX
"""What a Redis URL looks like, for a message's fix."""


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or None when redis-py can use it as meant: the one check,
    :func:`ansible_collections.firm.core.plugins.module_utils.redis_auth.url_problem` (scheme,
    brackets, port, query options, a path or database that is not a number from 0 to
    :data:`MAX_REDIS_DB`, no host, spaces or control characters); it names no part of the URL."""
    return redis_auth.url_problem(url)
