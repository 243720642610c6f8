"""The base of the filter rewriters: a PyIceberg expression visitor that rebuilds `and`/`or`/`not` as they are and
leaves each predicate to the subclass, so a rewriter says only what it changes."""

from __future__ import annotations

from typing import Any

from pyiceberg.expressions import AlwaysFalse, AlwaysTrue, And, BooleanExpression, Not, Or, UnboundPredicate
from pyiceberg.expressions.visitors import BooleanExpressionVisitor

__all__ = ["PredicateRewriter"]


class PredicateRewriter(BooleanExpressionVisitor[BooleanExpression]):
    """Rebuilds an unbound expression, passing each unbound predicate through `visit_unbound_predicate`."""

    def visit_true(self) -> BooleanExpression:
        return AlwaysTrue()

    def visit_false(self) -> BooleanExpression:
        return AlwaysFalse()

    def visit_not(self, child_result: BooleanExpression) -> BooleanExpression:
        return Not(child_result)

    def visit_and(self, left_result: BooleanExpression, right_result: BooleanExpression) -> BooleanExpression:
        return And(left_result, right_result)

    def visit_or(self, left_result: BooleanExpression, right_result: BooleanExpression) -> BooleanExpression:
        return Or(left_result, right_result)

    def visit_bound_predicate(self, predicate: Any) -> BooleanExpression:
        return predicate

    def visit_unbound_predicate(self, predicate: UnboundPredicate) -> BooleanExpression:
        return predicate
