"""Flow control's pure rules, shared by the planner, the store, the executor and the
wire: rates (`rates.py`), key values (`keys.py`), token-bucket arithmetic
(`buckets.py`) and resource capacity (`capacity.py`). Nothing here does I/O or
imports another execplan package, so every layer may use it (docs/flow-control.md).
"""
