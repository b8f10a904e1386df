"""One registry helper for every "name → thing" table (backbones, losses, query methods, loaders, profiles).

Names are normalised once (case, ``_`` = ``-``, surrounding spaces), a name registered twice is refused, an
unknown name gets the list of known ones and the closest match, and :meth:`Registry.create` refuses keyword
arguments the factory does not take instead of letting them vanish.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

__all__ = ["Registry", "normalize_name"]

T = TypeVar("T")


def normalize_name(name: str) -> str:
    """The key a name is stored under: lower case, ``_`` and spaces as ``-``."""
    return "-".join(str(name).strip().lower().replace("_", "-").split())


class Registry(Mapping[str, T], Generic[T]):
    """A named table of ``kind`` entries (read like a dict: ``registry[name]``, ``name in registry``, iteration)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ registering
    def register(self, name: str, entry: T | None = None, *, aliases: tuple[str, ...] = (), **meta: Any):
        """Add ``entry`` under ``name`` (and ``aliases``); without ``entry``, a decorator."""
        if entry is None:
            def decorator(obj: T) -> T:
                self.register(name, obj, aliases=aliases, **meta)
                return obj
            return decorator
        key = normalize_name(name)
        if key in self._entries or key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        for alias in aliases:
            alias_key = normalize_name(alias)
            if alias_key in self._entries or alias_key in self._aliases:
                raise ValueError(f"{self.kind} alias {alias!r} is already taken")
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[normalize_name(alias)] = key
        self.meta[key] = dict(meta)
        return entry

    # ------------------------------------------------------------------ looking up
    def key(self, name: str) -> str:
        """The canonical name of ``name`` (an alias resolves to its entry); ValueError naming the known ones."""
        key = normalize_name(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            known = sorted(self._entries)
            close = difflib.get_close_matches(key, known + sorted(self._aliases), n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {self.kind} {name!r}{hint} Known: {', '.join(known)}")
        return key

    def get_entry(self, name: str) -> T:
        return self._entries[self.key(name)]

    def __getitem__(self, name: str) -> T:
        try:
            return self.get_entry(name)
        except ValueError as error:
            raise KeyError(str(error)) from None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = normalize_name(name)
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    # ------------------------------------------------------------------ building
    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with ``kwargs``, refusing any it does not accept."""
        factory = self.get_entry(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not a factory")
        check_kwargs(factory, kwargs, f"{self.kind} {self.key(name)!r}")
        return factory(**kwargs)


def check_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    """Raise TypeError naming the keyword arguments ``factory`` would not accept (unless it takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"{what} does not take {', '.join(unknown)}; it takes: {', '.join(sorted(accepted)) or 'no arguments'}")
