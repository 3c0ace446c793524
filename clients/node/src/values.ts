/** JSON-like values as google.protobuf.Value, the way the worker sends them. */
import { fromJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Value } from "@bufbuild/protobuf/wkt";

/**
 * Through JSON text: Dates become strings, undefined members vanish, as in JSON.
 * Throws a TypeError for what JSON cannot hold (a bigint, a circular object).
 */
export function toValue(json: unknown): Value {
  const text = JSON.stringify(json ?? null);
  return fromJson(ValueSchema, (text === undefined ? null : JSON.parse(text)) as JsonValue);
}
