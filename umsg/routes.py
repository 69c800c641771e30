"""Channel routes (compatibility name): the implementation lives in the `umsg.routing` package."""

from __future__ import annotations

from umsg.routing.book import Effective, RouteBook
from umsg.routing.build import build_route, parse_table, table_problems
from umsg.routing.filters import Sample
from umsg.routing.table import BUILTIN_DEFAULT, Explanation, Route, RouteTable
from umsg.routing.targets import RouteDecision, Target

DEFAULT_ROUTE = BUILTIN_DEFAULT

__all__ = ["BUILTIN_DEFAULT", "DEFAULT_ROUTE", "Effective", "Explanation", "Route", "RouteBook",
           "RouteDecision", "RouteTable", "Sample", "Target", "build_route", "parse_table", "table_problems"]
