/**
 * `generate()`: a model completion as an async iterator of typed events, with
 * `cancel()`. Runtime-neutral, like the rest of the client.
 *
 * @module
 */
import type { Message } from "../protocol/codec.ts";
import type { GenerateRequest } from "../protocol/messages.ts";
import type { Client } from "./client.ts";
import type { EventStream } from "./event_stream.ts";

/** Why a generation ended. */
export type EndReason = "stop" | "length" | "stop_string" | "cancelled" | "shutdown";

/** Token counts and timings of a finished generation. */
export interface Usage {
  prompt_tokens: number;
  /** Prompt tokens reused from the daemon's prefix cache. */
  cached_tokens: number;
  completion_tokens: number;
  ttft_ms: number;
  total_ms: number;
}

/**
 * Parameters of a `generate` request (PROTOCOL.md): the validated request's fields,
 * all optional here (`stream` defaults to true: `token` events then `eos`; false: one
 * `result`).
 */
export type GenerateParams = Partial<Omit<GenerateRequest, "type" | "id">>;

/** One event of a generation. */
export type GenerateEvent =
  | { event: "token"; id: string; text: string; token_id: number }
  | { event: "eos"; id: string; reason: EndReason; usage: Usage }
  | { event: "result"; id: string; text: string; reason: EndReason; usage: Usage };

/** A running generation: iterate its events; `cancel()` stops it within a decode step. */
export interface Generation extends AsyncIterable<GenerateEvent> {
  /** The request id (the target of `cancel`). */
  readonly id: string;
  /** Asks the daemon to stop; the stream then ends with `eos` reason `cancelled`. */
  cancel(): void;
  /** Collects the whole text and the end event (consumes the iterator). */
  complete(): Promise<{ text: string; reason: EndReason; usage: Usage }>;
}

const isLast = (ev: Message) => ev.event === "eos" || ev.event === "result";

/**
 * Starts a generation. An `error` event makes the iteration throw the matching
 * `UmadError` (e.g. `code` "E_BUSY"); leaving the loop early cancels the request.
 *
 * @example
 * ```ts ignore
 * const client = await connect();
 * const gen = generate(client, { prompt: "Once upon a time", max_tokens: 32 });
 * for await (const ev of gen) if (ev.event === "token") console.log(ev.text);
 * ```
 */
export function generate(client: Client, params: GenerateParams): Generation {
  const stream: EventStream = client.stream({ ...params, type: "generate" }, isLast);
  const gen: Generation = {
    id: stream.id,
    cancel() {
      if (!stream.done) client.send({ type: "cancel", target: stream.id });
    },
    [Symbol.asyncIterator]() {
      return stream as AsyncIterableIterator<Message> as AsyncIterableIterator<GenerateEvent>;
    },
    async complete() {
      const parts: string[] = [];
      for await (const ev of gen) {
        if (ev.event === "token") parts.push(ev.text);
        else {return {
            text: ev.event === "result" ? ev.text : parts.join(""),
            reason: ev.reason,
            usage: ev.usage,
          };}
      }
      throw new Error(`Generation ${stream.id} ended without eos`);
    },
  };
  return gen;
}
