"""Griffe extension for the API reference (docs/api.md): lazy names, and Sphinx roles as code.

``medt3d`` and ``medt3d.networks`` define their public names lazily (a module ``__getattr__``, so that
``import medt3d`` stays fast), which static analysis cannot see. For every such package this extension
imports it, asks it for each name of ``__all__`` that static analysis did not find, and adds an alias to
the module that really defines it. Nothing is hard-coded: when a name moves, its alias follows.

The docstrings cross-reference with Sphinx roles (:func:`predict`), which MkDocs does not know; they are
shown as code (`predict`).
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import griffe

_SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc|const):`~?([^`]+)`")


def _plain_roles(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = _SPHINX_ROLE.sub(r"`\1`", obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _plain_roles(member)


def _defining_module(package: griffe.Module, runtime: Any, name: str) -> str | None:
    obj = getattr(runtime, name)
    module = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
    if module:
        return module
    # a constant: the one submodule that defines it
    found = [sub.path for sub in package.members.values()
             if not sub.is_alias and sub.is_module and name in sub.members and not sub.members[name].is_alias]
    return found[0] if len(found) == 1 else None


class LazyExports(griffe.Extension):
    """Alias the lazily loaded names of ``__all__`` to where they are defined."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._visit(pkg)
        _plain_roles(pkg)

    def _visit(self, module: griffe.Module) -> None:
        for sub in module.members.values():
            if not sub.is_alias and sub.is_module:
                self._visit(sub)
        if "__getattr__" not in module.members or "__all__" not in module.members:
            return
        runtime = importlib.import_module(module.path)
        for name in getattr(runtime, "__all__", ()):
            if name in module.members or name.startswith("_"):
                continue
            target = _defining_module(module, runtime, name)
            if target is None:
                raise RuntimeError(f"{module.path}.{name}: cannot tell which module defines it")
            module.set_member(name, griffe.Alias(name, f"{target}.{name}", parent=module))
