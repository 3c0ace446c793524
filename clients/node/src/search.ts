/**
 * Search attributes: JavaScript values <-> execplan.v1.SearchAttributeValue.
 *
 *     toSearchAttributes({ customer: "acme", priority: 3, score: 0.5, vip: true, due: new Date() })
 *     fromSearchAttributes(execution.searchAttributes)   // { customer: "acme", ... }
 *
 * string -> string, an integer number or a bigint -> int, any other number -> double,
 * boolean -> bool, Date -> time, null -> remove the attribute (from a task).
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { SearchAttributeValueSchema } from "./gen/execplan/v1/execution_pb.js";
import type { SearchAttributeValue } from "./gen/execplan/v1/execution_pb.js";

export type SearchValue = string | number | bigint | boolean | Date | null;

export function toSearchValue(value: SearchValue): SearchAttributeValue {
  if (value === null) return create(SearchAttributeValueSchema, {});
  if (typeof value === "string") return create(SearchAttributeValueSchema, { value: { case: "stringValue", value } });
  if (typeof value === "boolean") return create(SearchAttributeValueSchema, { value: { case: "boolValue", value } });
  if (typeof value === "bigint") return create(SearchAttributeValueSchema, { value: { case: "intValue", value } });
  if (typeof value === "number") {
    if (Number.isSafeInteger(value)) return create(SearchAttributeValueSchema, { value: { case: "intValue", value: BigInt(value) } });
    return create(SearchAttributeValueSchema, { value: { case: "doubleValue", value } });
  }
  if (value instanceof Date) return create(SearchAttributeValueSchema, { value: { case: "timeValue", value: timestampFromDate(value) } });
  throw new TypeError(`a search attribute is a string, number, bigint, boolean or Date, not ${typeof value}`);
}

export function toSearchAttributes(attributes: Readonly<Record<string, SearchValue>> | undefined): Record<string, SearchAttributeValue> {
  const out: Record<string, SearchAttributeValue> = {};
  for (const [name, value] of Object.entries(attributes ?? {})) out[name] = toSearchValue(value);
  return out;
}

/** Plain values: int attributes as bigint, times as Date. */
export function fromSearchAttributes(attributes: Readonly<Record<string, SearchAttributeValue>>): Record<string, SearchValue> {
  const out: Record<string, SearchValue> = {};
  for (const [name, { value }] of Object.entries(attributes)) {
    out[name] = value.case === "timeValue" ? timestampDate(value.value) : value.case === undefined ? null : value.value;
  }
  return out;
}
