"""YAML files into typed pydantic models, with every error located as ``file:line: key``.

This is the base layer's configuration loader. The gateway reads its whole file through it, and
a service reads its own section the same way (:meth:`Document.validate` with ``at=``), so an
operator gets the same ``file:line: key.path: message`` errors wherever the mistake is.
"""

from __future__ import annotations

import hashlib
import re
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
        :class:`ConfigError` naming the first problem."""
        if data is None:
            data = self.data
            for part in at:
                data = data.get(part) if isinstance(data, dict) else None
            data = {} if data is None else data
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = [*at, *(str(part) for part in first["loc"])]
            message = str(first["msg"]).removeprefix("Value error, ")
            if len(loc) == len(at) and ": " in message and "." in message.split(": ", 1)[0]:
                # Cross-reference errors name their own key path ("routes[2].upstream: ...").
                key_text, message = message.split(": ", 1)
                loc = [*at, *(p for p in re.split(r"[.\[\]]+", key_text) if p)]
            more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
            raise self.error(message + more, *loc) from exc

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
    """Plain configuration data with secret-looking keys and URL credentials masked."""
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key):
            return "********"
        return URL_CREDENTIALS.sub(r"\1********@", value)
    return value
