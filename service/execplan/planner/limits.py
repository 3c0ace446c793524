"""The bounds of a workflow document, checked before the expensive work.

    MAX_DOCUMENT_BYTES    64 MiB of source text, checked before parsing     limit-document-size
    MAX_DOCUMENT_VALUES   4,000,000 values (every key, scalar, list and map;
                          a YAML alias counts as the values it stands for),
                          counted while parsing                             limit-document-values
    MAX_DOCUMENT_DEPTH    32 nested lists/maps, the document's own levels
                          included (a task input value may nest 27 deep)    limit-document-depth
    MAX_TASKS             100,000 tasks, counted while parsing              limit-tasks
    MAX_NUMBER_CHARS      100 characters in a number literal                invalid-number
    MAX_SAFE_INTEGER      integers in values within +-(2^53 - 1): a JSON /
                          protobuf number is a double                       invalid-number
    MAX_NAME_CHARS        128 characters in a name: the workflow's name and
                          version, task ids, task/fallback/compensation
                          types, input, output and secret names             name-too-long

Names travel in every event, dispatch and metric label of what they name, so a
30 MB task id (accepted before) made each of them 30 MB; 128 is what the builtin.workflow
reference already allowed for a version.

Why these numbers: a 100,000-task workflow with a few inputs per task is ~1.7 million
values and 10-30 MB of text; 4 million values of YAML or JSON stay under ~1 GiB
while they are being built. A protobuf message nests at most 100 levels when parsed
and a plan spends two or three levels per level of a task input, so a value nested
45 deep compiled to a plan nobody could read back; 32 keeps that and the CEL
library's recursive value conversion far away.

Expression bounds (size, nesting, operator chains, comprehensions) are in
`expressions.py`. Modules read these as `limits.NAME` at call time, so a test can
lower one with monkeypatch.
"""

from __future__ import annotations

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_DOCUMENT_VALUES = 4_000_000
MAX_DOCUMENT_DEPTH = 32
MAX_TASKS = 100_000
MAX_NUMBER_CHARS = 100
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NAME_CHARS = 128
