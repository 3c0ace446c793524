"""Finding executions: typed search attributes and the filter language over them.

    attributes.py   SearchValue (string, int, double, bool, time), names and bounds
    filter.py       parse("customer = \"acme\" AND state = running") -> Filter; matches()

Pure: no I/O. The store indexes attributes and compiles a `Filter` to SQL
(`execplan.store.search_sql`); the memory store evaluates it with `matches`.
"""

from __future__ import annotations

from .attributes import SearchValue, check_attributes, merge
from .filter import EMPTY, Clause, Filter, parse

__all__ = ["EMPTY", "Clause", "Filter", "SearchValue", "check_attributes", "merge", "parse"]
