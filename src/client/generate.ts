/**
 * `generate()`: a model completion as an async iterator of typed events, with
 * `cancel()` and `complete()`. Runtime-neutral, like the rest of the client.
 *
 * @module
 */
import type { EndReason, ReplyOf, ToolCall, Usage } from "../protocol/events.ts";
import type { RequestInput } from "../protocol/messages.ts";
import type { Client } from "./client.ts";

/**
 * Parameters of a `generate` request (PROTOCOL.md): `prompt` or `messages`, and any of
 * the optional fields (`stream` defaults to true: `token` events then `eos`; false:
 * one `result`).
 */
export type GenerateParams = Omit<RequestInput<"generate">, "type" | "id">;

/** One event of a generation: `token`, `eos` or `result`. */
export type GenerateEvent = ReplyOf<"generate">;

/** What {@linkcode Generation.complete} resolves with. */
export interface Completion {
  /** The whole generated text. */
  text: string;
  /** Why it ended. */
  reason: EndReason;
  /** Token counts and timings. */
  usage: Usage;
  /** The functions the model called, if any. */
  tool_calls?: ToolCall[];
}

/** A running generation: iterate its events; `cancel()` stops it within a decode step. */
export interface Generation extends AsyncIterable<GenerateEvent> {
  /** The request id (the target of `cancel`). */
  readonly id: string;
  /** Asks the daemon to stop; the stream then ends with `eos` reason `cancelled`. */
  cancel(): void;
  /** Collects the whole text and the end event (consumes the iterator). */
  complete(): Promise<Completion>;
}

/**
 * Starts a generation. An `error` event makes the iteration throw the matching
 * `UmadError` (e.g. `code` "E_BUSY"); leaving the loop early cancels the request.
 *
 * @example
 * ```ts ignore
 * import { connect, generate } from "./mod.ts";
 * const client = await connect();
 * const gen = generate(client, { prompt: "Once upon a time", max_tokens: 32 });
 * for await (const ev of gen) if (ev.event === "token") console.log(ev.text);
 * ```
 */
export function generate(client: Client, params: GenerateParams): Generation {
  const stream = client.stream({ ...params, type: "generate" });
  const gen: Generation = {
    id: stream.id,
    cancel() {
      if (!stream.done) client.send({ type: "cancel", target: stream.id });
    },
    [Symbol.asyncIterator]: () => stream,
    async complete() {
      const parts: string[] = [];
      for await (const ev of stream) {
        if (ev.event === "token") {
          parts.push(ev.text);
          continue;
        }
        const text = ev.event === "result" ? ev.text : parts.join("");
        const done: Completion = { text, reason: ev.reason, usage: ev.usage };
        if (ev.tool_calls) done.tool_calls = ev.tool_calls;
        return done;
      }
      throw new Error(`Generation ${stream.id} ended without eos`);
    },
  };
  return gen;
}
