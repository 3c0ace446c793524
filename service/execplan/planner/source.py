"""Source text -> JSON-like document, within the bounds of `limits`.

    ok, doc = load(text, fmt, diags)      fmt: "auto" | "yaml" | "json"

The size of the text is checked before anything parses it (`limit-document-size`);
then YAML goes to `load_yaml` and JSON to `load_json`, which count values, depth and
tasks while they parse and report duplicate keys and over-long numbers. "auto" means
JSON when the text starts with `{`, else YAML. `ok` is False when the document could
not be built (the reason is in `diags`); it may be True with error diagnostics too
(a duplicate key), so that the rest of the workflow is still checked.
"""

from __future__ import annotations

from execplan.planner import limits
from execplan.planner.diagnostics import Diagnostics
from execplan.planner.load_json import load_json


def load(source: str, fmt: str, diags: Diagnostics) -> tuple[bool, object]:
    limit = limits.MAX_DOCUMENT_BYTES
    # Characters <= UTF-8 bytes <= 4 x characters: encode only when it can matter.
    if len(source) > limit or (len(source) * 4 > limit and len(source.encode()) > limit):
        diags.error(
            "limit-document-size",
            "",
            f"the document is larger than {limit // (1024 * 1024)} MiB",
        )
        return False, None
    if fmt == "auto":
        fmt = "json" if source.lstrip().startswith("{") else "yaml"
    if fmt == "json":
        return load_json(source, diags)
    if fmt != "yaml":
        raise ValueError(f"unknown format {fmt!r}: expected auto, yaml or json")
    # Imported here: PyYAML's loader is ~10% of the planner's import time, which
    # every `execplan plan FILE.json` and every server start would otherwise pay.
    from execplan.planner.load_yaml import load_yaml  # noqa: PLC0415

    return load_yaml(source, diags)
