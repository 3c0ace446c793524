"""Key values of limits, buckets, breakers and cache entries, as stored text.

A key expression (`limit.key: "inputs.model"`) evaluates to any JSON value; the key
is its canonical JSON text (sorted keys, no spaces), so `"gpt-4o"` is `"gpt-4o"` with
its quotes and `3` is `3`... except that a plain string is used without quotes, which
is what people type in `execplan limits` and `execplan cache purge --key`. Text over
MAX_KEY_CHARS becomes `sha256:<hex>` of it, so a key never grows a row without bound.

    key_text("gpt-4o") == "gpt-4o"
    key_text({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    default_cache_key("llm.chat", {"prompt": "hi"}) == "sha256:..."
"""

from __future__ import annotations

import hashlib
import json

MAX_KEY_CHARS = 256


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def key_text(value: object) -> str:
    """The stored form of a key value (see the module docstring)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # CEL gives 3.0 for JSON numbers: the same key as 3
    text = value if isinstance(value, str) else _canonical(value)
    return text if len(text) <= MAX_KEY_CHARS else _digest(text)


def default_cache_key(task_type: str, inputs: object) -> str:
    """The cache key of a task that names none: a digest of its type and inputs."""
    return _digest(_canonical([task_type, inputs]))
