"""Validation rules whose visitor methods are looked up once per class, not once per document.

graphql-core's `validate` makes a fresh instance of every rule for each document, and each
instance finds its `enter_<kind>` / `leave_<kind>` methods by `getattr` the first time it meets a
kind, falling back to `enter` / `leave`: for a new document about thirty rules times a dozen
kinds, most of them misses that raise and catch AttributeError inside `getattr`. A profile of a
new document per request put a third of the request's time there. The same lookups on the class,
cached, then bound to the instance, give the same methods (the rules keep none on the instance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphql import ASTValidationRule, ValidationContext
from graphql.language.visitor import EnterLeaveVisitor, Visitor

Methods = tuple[Callable[..., Any] | None, Callable[..., Any] | None]
_FOUND: dict[tuple[type[Visitor], str], Methods] = {}  # rule classes times node kinds: a few hundred


def _methods(cls: type[Visitor], kind: str) -> Methods:
    """What `Visitor.get_enter_leave_for_kind` would find on an instance of `cls`, unbound."""
    found = _FOUND.get((cls, kind))
    if found is None:
        enter = getattr(cls, f"enter_{kind}", None) or getattr(cls, "enter", None)
        leave = getattr(cls, f"leave_{kind}", None) or getattr(cls, "leave", None)
        found = _FOUND[(cls, kind)] = (enter, leave)
    return found


_NOTHING = EnterLeaveVisitor(None, None)


class _ClassLookups(dict[str, EnterLeaveVisitor]):
    """A rule instance's `enter_leave_map`, each kind filled from its class's cached lookups."""

    __slots__ = ("visitor",)

    def __init__(self, visitor: Visitor) -> None:
        super().__init__()
        self.visitor = visitor

    def __missing__(self, kind: str) -> EnterLeaveVisitor:
        enter, leave = _methods(type(self.visitor), kind)
        if enter is None and leave is None:
            bound = _NOTHING  # most rules, for most kinds
        else:
            bound = EnterLeaveVisitor(
                enter.__get__(self.visitor) if enter is not None else None,
                leave.__get__(self.visitor) if leave is not None else None,
            )
        self[kind] = bound
        return bound


def with_class_lookups(rules: Sequence[type[ASTValidationRule]]) -> tuple[type[ASTValidationRule], ...]:
    """The same rules, each finding its visitor methods through its class's cache."""
    return tuple(_with_class_lookups(rule) for rule in rules)


def _with_class_lookups(rule: type[ASTValidationRule]) -> type[ASTValidationRule]:
    def __init__(self: ASTValidationRule, context: ValidationContext) -> None:
        rule.__init__(self, context)
        self.enter_leave_map = _ClassLookups(self)

    return type(rule.__name__, (rule,), {"__init__": __init__, "__doc__": rule.__doc__})
