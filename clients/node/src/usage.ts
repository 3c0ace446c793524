/**
 * Usage an attempt reports (docs/usage.md).
 *
 *     worker.task("llm.ask", async (inputs, ctx) => {
 *       const reply = await llm(inputs.prompt);
 *       ctx.usage({ tokens_in: reply.promptTokens, tokens_out: reply.completionTokens, cost: reply.cost });
 *       return reply.text;                                   // counted already
 *     });
 *     return new Output(reply.text, { cost: 0.02 });          // or beside the output
 *
 * `ctx.usage` adds to what the attempt used and leaves with the next stream message;
 * the executor records it before it acknowledges it, so it counts even when the
 * handler then throws, times out or the worker dies. Unacknowledged reports are sent
 * again after a reconnect; the executor counts each (numbered per attempt) once.
 *
 * Counter names are `[a-z][a-z0-9_]*` (64 characters at most, 32 per report);
 * camelCase keys are accepted and sent in snake_case (`tokensIn` is `tokens_in`).
 * Amounts are finite numbers >= 0.
 */
import { create } from "@bufbuild/protobuf";
import { UsageSchema } from "./gen/execplan/v1/execution_pb.js";
import type { Usage } from "./gen/execplan/v1/execution_pb.js";

const COUNTER = /^[a-z][a-z0-9_]{0,63}$/;
export const MAX_COUNTERS = 32;
const MAX_AMOUNT = 1e15;

/** What `ctx.usage` takes: the well-known counters and any of your own. */
export interface UsageCounters {
  tokens_in?: number | undefined;
  tokens_out?: number | undefined;
  cost?: number | undefined;
  [counter: string]: number | undefined;
}

/** A handler's output with the attempt's usage beside it (`TaskResult.usage`). */
export class Output {
  constructor(
    readonly value: unknown,
    readonly usage?: UsageCounters,
  ) {}
}

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** `counters` as a Usage message (undefined entries dropped; undefined when none is left). */
export function usageMessage(counters: UsageCounters): Usage | undefined {
  const out = create(UsageSchema);
  let n = 0;
  for (const [key, amount] of Object.entries(counters)) {
    if (amount === undefined || amount === null) continue;
    const name = snake(key);
    if (!COUNTER.test(name)) throw new RangeError(`usage counter name ${JSON.stringify(key)} is not [a-z][a-z0-9_]* (64 at most)`);
    if (typeof amount !== "number") throw new TypeError(`usage ${name}: expected a number, got ${typeof amount}`);
    if (!Number.isFinite(amount) || amount < 0 || amount > MAX_AMOUNT) {
      throw new RangeError(`usage ${name}: ${amount} is not a finite number in 0..1e15`);
    }
    out.counters[name] = (out.counters[name] ?? 0) + amount;
    n += 1;
  }
  if (n > MAX_COUNTERS) throw new RangeError(`${n} usage counters; at most ${MAX_COUNTERS} per report`);
  return n ? out : undefined;
}
