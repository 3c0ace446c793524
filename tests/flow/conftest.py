"""Fixtures of the flow-control tests: a `FlowRig` (tests/support/flow_rig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.flow_rig import FlowRig
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.flow_rig import FlowRig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[FlowRig]:
    r = FlowRig(tmp_path)
    try:
        yield r
    finally:
        r.close()
