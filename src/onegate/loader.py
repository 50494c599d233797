"""YAML files into typed pydantic models, with every error located as ``file:line: key``.

This is the base layer's configuration loader. The gateway reads its whole file through it, and
a service reads its own section the same way (:meth:`Document.validate` with ``at=``), so an
operator gets the same ``file:line: key.path: message`` errors wherever the mistake is.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from onegate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Document:
    """A parsed YAML file: its data, its node tree (for line numbers) and the digest of its
    bytes (to tell when the file changed without reading it twice)."""

    def __init__(
        self, data: dict[str, Any], node: yaml.Node | None, source: str, path: Path | None
    ) -> None:
        self.data = data
        self.node = node
        self.source = source
        self.path = path
        self.digest: str | None = None

    def validate(self, model: type[M], at: tuple[str, ...] = (), data: Any = None) -> M:
        """``data`` (default: the section at ``at``) as a ``model``; raises a located
        :class:`ConfigError` naming every problem, one per line, in file order."""
        if data is None:
            data = self.section(at)
            data = {} if data is None else data
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = [self._problem(model, at, error) for error in exc.errors()]
            raise self._together(problems) from exc

    def _problem(self, model: type[BaseModel], at: tuple[str, ...], error: Any) -> ConfigError:
        """One pydantic error as a located :class:`ConfigError`."""
        relative = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and relative:
            message = unknown_key_message(relative[-1], keys_at(model, relative[:-1]))
        loc = [*at, *_in_file(self.section(at), relative)]
        if (
            error["type"] != "extra_forbidden"
            and len(loc) == len(at)
            and ": " in message
            and "." in message.split(": ", 1)[0]
        ):
            # Cross-reference errors name their own key path ("routes[2].upstream: ...").
            key_text, message = message.split(": ", 1)
            loc = [*at, *(p for p in re.split(r"[.\[\]]+", key_text) if p)]
        return self.error(message, *loc)

    def section(self, at: tuple[str, ...]) -> Any:
        """The data at ``at`` (None if it is not there)."""
        data: Any = self.data
        for part in at:
            data = data.get(part) if isinstance(data, dict) else None
        return data

    def _together(self, problems: list[ConfigError]) -> ConfigError:
        """The first problem (in file order) carrying the others, duplicates dropped."""
        seen: set[str] = set()
        unique = []
        for problem in sorted(problems, key=lambda p: _line_number(p.location)):
            if problem.line() not in seen:
                seen.add(problem.line())
                unique.append(problem)
        first, *rest = unique
        return ConfigError(first.detail, location=first.location, key=first.key, also=rest)

    def error(self, message: str, *loc: str | int) -> ConfigError:
        """A :class:`ConfigError` pointing at ``loc`` (e.g. ``"upstreams", "ai", "targets"``),
        also for problems found after validation (an app that cannot be imported)."""
        parts = [str(p) for p in loc]
        line = line_of(self.node, parts)
        return ConfigError(
            message,
            location=f"{self.source}:{line}" if line else self.source,
            key=format_key(parts) or None,
        )


def read_document(path: Path) -> Document:
    """Read and parse a YAML file whose top level is a mapping. Raises :class:`ConfigError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", location=str(path)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("the file is not UTF-8", location=str(path)) from exc
    document = parse_document(text, str(path), path)
    document.digest = hashlib.sha256(raw).hexdigest()
    return document


def parse_document(text: str, source: str, path: Path | None = None) -> Document:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at_line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", location=f"{source}{at_line}") from exc
    if data is None:
        # Also what an editor's half-written file looks like: never take it for "no routes".
        raise ConfigError("the config file is empty", location=f"{source}:1")
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping", location=f"{source}:1")
    return Document(data, node, source, path)


def _in_file(data: Any, loc: list[str]) -> list[str]:
    """``loc`` without the parts pydantic adds that are not in the file: the tag of a tagged
    union (``auth.issuers[0].jwt.keys`` is ``auth.issuers[0].keys`` in the file)."""
    kept = []
    for index, part in enumerate(loc):
        if isinstance(data, dict):
            tag = part in data.values() or (index + 1 < len(loc) and loc[index + 1] in data)
            if part not in data and index + 1 < len(loc) and tag:
                continue
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            data = None
        kept.append(part)
    return kept


def _line_number(location: str | None) -> int:
    line = (location or "").rpartition(":")[2]
    return int(line) if line.isdigit() else 0


def keys_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys the mapping at ``loc`` inside ``model`` accepts, or [] if that is not a model
    (a free-form mapping, or a path the types do not follow)."""
    kinds: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for kind in kinds:
            for inner in _unwrapped(kind):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    field = inner.model_fields.get(part)
                    if field is not None:
                        following.append(field.annotation)
                    elif not part.isdigit():
                        # A tagged union's member, named by its tag ("jwt"), stays in the path.
                        following.append(inner)
                elif typing.get_origin(inner) in (list, tuple) and part.isdigit():
                    following.extend(typing.get_args(inner)[:1])
                elif typing.get_origin(inner) is dict:
                    following.extend(typing.get_args(inner)[1:2])
        kinds = following
    keys: list[str] = []
    for kind in kinds:
        for inner in _unwrapped(kind):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                keys += [k for k in inner.model_fields if k not in keys]
    return keys


def _unwrapped(kind: Any) -> list[Any]:
    """The types a value of ``kind`` may have: unions opened, Annotated and None dropped."""
    origin = typing.get_origin(kind)
    if origin is typing.Annotated:
        return _unwrapped(typing.get_args(kind)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [inner for arg in typing.get_args(kind) for inner in _unwrapped(arg)]
    return [] if kind is type(None) else [kind]


def unknown_key_message(key: str, valid: list[str]) -> str:
    """``unknown key; did you mean 'prefix'?`` (the key itself is in the located path)."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    if valid:
        return f"unknown key {key!r} (valid keys: {', '.join(valid)})"
    return f"unknown key {key!r}"


def format_key(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def line_of(node: yaml.Node | None, loc: list[str]) -> int | None:
    """Line (1-based) of the deepest YAML node along ``loc`` that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == part:
                    child = value if not isinstance(value, yaml.ScalarNode) else key
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


_SECRET_KEY = re.compile(r"(secret|password|token|api_?key|private)", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(://)([^/@\s]+)@")


def masked(value: Any, key: str = "") -> Any:
    """Plain configuration data with the values of secret-looking keys and URL credentials
    masked; the names of environment variables (``*_env``) are shown."""
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str):
        # ``secret_env: JWT_SECRET`` names where the secret is, which is worth seeing.
        if _SECRET_KEY.search(key) and not key.endswith("_env"):
            return "********"
        return URL_CREDENTIALS.sub(r"\1********@", value)
    return value
