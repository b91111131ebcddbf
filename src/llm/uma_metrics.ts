/**
 * UMA Serve's flat decode counters (PROTOCOL.md, "UMA Serve compatibility"), kept from
 * the engine's per-step figures so UMA's clients and tests read the keys they know at
 * the top level of the `metrics` map.
 *
 * @module
 */
import type { StepStats } from "./engine_messages.ts";

/** The keys UMA Serve's `{"type":"metrics"}` answer carries. */
export interface UmaMetrics {
  /** Every key is a number, so the map merges into `metrics` as it is. */
  [key: string]: number;
  /** Tokens sent to clients. */
  tokens_generated_total: number;
  /** Engine steps that decoded anything. */
  batch_calls_total: number;
  /** Rows of the last such step (stream rows and prompt tokens). */
  last_batch_size: number;
  /** The same count as `batch_calls_total`, under UMA's other name. */
  decode_calls: number;
  /** Time in those steps, ns. */
  decode_ns_total: number;
  /** Rows over all those steps. */
  decode_tokens_total: number;
  /** The last step's time, ms (rounded). */
  decode_ms_last: number;
  /** Exponentially weighted mean step time (weight 0.2), ms. */
  decode_ms_ewma: number;
  /** Shortest step, ms (rounded). */
  decode_ms_min: number;
  /** Longest step, ms (rounded). */
  decode_ms_max: number;
  /** Mean step time, ms. */
  decode_ms_mean: number;
  /** Mean rows per step. */
  decode_tokens_per_call_mean: number;
  /** Prompt tokens decoded. */
  prefill_tokens_total: number;
}

/**
 * Counts decode calls the way UMA Serve's daemon does: a call is one engine step that
 * decoded anything (stream rows, prompt chunks or both); its time is the step's decode
 * and prompt-chunk time together; the EWMA moves a fifth of the way each call.
 *
 * @example
 * ```ts
 * import { UmaCounters } from "./uma_metrics.ts";
 * const c = new UmaCounters();
 * c.add({ rows: 4, drafts: 0, draftsAccepted: 0, prefillTokens: 0, kvCells: 0,
 *   decodeMs: 10, prefillMs: 0 });
 * console.log(c.flat(4).batch_calls_total, c.flat(4).decode_ms_mean); // 1 10
 * ```
 */
export class UmaCounters {
  #calls = 0;
  #ms = 0;
  #tokens = 0;
  #prefill = 0;
  #last = 0;
  #lastMs = 0;
  #ewma = 0;
  #min = Infinity;
  #max = 0;

  /** Adds one engine step (the figures of it these counters read). */
  add(
    step: Pick<StepStats, "rows" | "prefillTokens" | "decodeMs" | "prefillMs"> & Partial<StepStats>,
  ): void {
    const tokens = step.rows + step.prefillTokens;
    this.#prefill += step.prefillTokens;
    if (tokens === 0) return;
    const ms = step.decodeMs + step.prefillMs;
    this.#calls++;
    this.#ms += ms;
    this.#tokens += tokens;
    this.#last = tokens;
    this.#lastMs = ms;
    this.#ewma = this.#calls === 1 ? ms : 0.8 * this.#ewma + 0.2 * ms;
    this.#min = Math.min(this.#min, ms);
    this.#max = Math.max(this.#max, ms);
  }

  /** The flat keys, with `tokensGenerated` tokens sent to clients so far. */
  flat(tokensGenerated: number): UmaMetrics {
    const r3 = (x: number) => Math.round(x * 1000) / 1000;
    const calls = this.#calls;
    return {
      tokens_generated_total: tokensGenerated,
      batch_calls_total: calls,
      last_batch_size: this.#last,
      decode_calls: calls,
      decode_ns_total: Math.round(this.#ms * 1e6),
      decode_tokens_total: this.#tokens,
      decode_ms_last: Math.round(this.#lastMs),
      decode_ms_ewma: r3(this.#ewma),
      decode_ms_min: calls ? Math.round(this.#min) : 0,
      decode_ms_max: Math.round(this.#max),
      decode_ms_mean: calls ? r3(this.#ms / calls) : 0,
      decode_tokens_per_call_mean: calls ? r3(this.#tokens / calls) : 0,
      prefill_tokens_total: this.#prefill,
    };
  }
}
