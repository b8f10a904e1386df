"""Load ground-truth pickles without letting them run code.

A pickle can name any importable callable (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) and have
the unpickler call it, so ``pickle.load`` on a downloaded file is arbitrary code execution.  Ground-truth files
(revisitop's ``gnd_*.pkl``) only hold dicts, lists, strings, numbers and numpy arrays, so the unpickler here
resolves a short allow-list of globals and refuses every other one *before* importing or calling anything.

revisitop's files were written by Python 2 (protocol 2): their ``str`` values are Python-2 byte strings.  They are
decoded as ASCII first, and as latin-1 if that fails (numpy needs latin-1 to get an array's raw bytes back).
"""
from __future__ import annotations

import _compat_pickle  # the stdlib's Python 2 -> 3 name table, the one pickle itself uses
import codecs
import io
import os
import pickle
from typing import Any, Callable

__all__ = ["UnsafePickleError", "safe_load_pickle", "safe_loads_pickle", "ALLOWED_GLOBALS"]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (nothing was imported or called)."""


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to latin-1: how Python 3 writes ``bytes`` (e.g. array data) at protocol 2."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"pickle asks _codecs.encode for encoding {encoding!r}; only latin-1 is allowed")
    return codecs.encode(text, "latin1", errors)


def _numpy_global(name: str) -> Callable[[], Any]:
    """Resolve a numpy global lazily, from ``numpy._core`` (numpy >= 2) or ``numpy.core`` (numpy 1.x)."""

    def resolve() -> Any:
        import numpy

        if name in ("ndarray", "dtype"):
            return getattr(numpy, name)
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy 1.x
            from numpy.core import multiarray  # type: ignore[no-redef]
        return getattr(multiarray, name)

    return resolve


def _builtin(name: str) -> Callable[[], Any]:
    import builtins

    return lambda: getattr(builtins, name)


# (module, name) in Python-3 spelling -> resolver.  Names written by (or for) Python 2 -- ``__builtin__.set``,
# ``commands.Popen`` -- are translated first, as pickle's own find_class does.
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): _numpy_global("scalar"),
    ("numpy", "ndarray"): _numpy_global("ndarray"),
    ("numpy", "dtype"): _numpy_global("dtype"),
}
# bytes(): how protocol 2 writes b"" (e.g. an empty array's data); set/frozenset: protocol-2 sets
_BUILTINS = {("builtins", name): _builtin(name) for name in ("set", "frozenset", "complex", "bytes", "bytearray")}
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    **_NUMPY,
    **_BUILTINS,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        written = f"{module}.{name}"
        # always translate: Python-3 names never collide with the Python-2 ones in these tables
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        resolver = ALLOWED_GLOBALS.get((module, name))
        if resolver is None:
            alias = f" (written as '{written}')" if written != f"{module}.{name}" else ""
            raise UnsafePickleError(
                f"refusing to unpickle global '{module}.{name}'{alias}: a ground-truth file only needs containers, "
                "numbers, strings and numpy arrays"
            )
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r}")


def safe_loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the allow-list; :class:`UnsafePickleError` names the first forbidden global."""
    last_error: UnicodeDecodeError | None = None
    for encoding in ("ASCII", "latin1"):  # ASCII = pickle's default; latin-1 for Python-2 byte strings
        try:
            return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
        except UnicodeDecodeError as error:
            last_error = error
        except UnsafePickleError as error:
            raise UnsafePickleError(f"{source}: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise pickle.UnpicklingError(f"{source}: not a readable pickle: {error}") from error
    raise pickle.UnpicklingError(f"{source}: cannot decode Python-2 strings: {last_error}")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load the pickle at ``path`` allowing only plain containers, numbers, strings and numpy arrays/scalars."""
    with open(path, "rb") as handle:
        data = handle.read()
    return safe_loads_pickle(data, source=str(path))
