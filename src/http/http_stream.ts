/**
 * One request an HTTP handler dispatches to the daemon's services: a
 * {@linkcode Stream} whose events the handler reads as an async iterator, and whose
 * backpressure is the HTTP response's (bytes the response has queued, not yet written).
 *
 * @module
 */
import type { Codec } from "../protocol/codec.ts";
import type { Event, EventFields, EventName } from "../protocol/events.ts";
import type { AbortReason, Stream, WireErrorCode } from "../protocol/service.ts";

/** What the HTTP response can still take. */
export interface ResponseSink {
  /** Under the byte cap and open. */
  readonly writable: boolean;
  /** Bytes queued and not yet written. */
  readonly queuedBytes: number;
  /** Resolves once writable again, or closed. */
  ready(): Promise<void>;
}

/**
 * The reply channel of one dispatched request. Services send into it as into a framed
 * connection's stream; the handler takes the events with `for await` (or `all()`), and
 * the iteration ends after the request's last event.
 *
 * @example
 * ```ts
 * import { HttpStream } from "./http_stream.ts";
 * const sink = { writable: true, queuedBytes: 0, ready: () => Promise.resolve() };
 * const stream = new HttpStream("h1", 7, sink);
 * stream.send("pong", {});
 * stream.end();
 * for await (const ev of stream) console.log(ev.event); // "pong"
 * ```
 */
export class HttpStream implements Stream, AsyncIterable<Event> {
  readonly codec: Codec = "json";
  readonly #sink: ResponseSink;
  readonly #controller = new AbortController();
  readonly #onEnd: (() => void) | undefined;
  #queue: Event[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  /** A stream for request `id` of connection `connectionId`; `onEnd` runs once at its end. */
  constructor(
    readonly id: string,
    readonly connectionId: number,
    sink: ResponseSink,
    onEnd?: () => void,
  ) {
    this.#sink = sink;
    this.#onEnd = onEnd;
  }

  /** True once the request ended (its last event is queued). */
  get ended(): boolean {
    return this.#ended;
  }
  get writable(): boolean {
    return !this.#ended && this.#sink.writable;
  }
  get queuedBytes(): number {
    return this.#sink.queuedBytes;
  }
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  send<E extends EventName>(event: E, fields: EventFields[E]): boolean {
    if (this.#ended) return false;
    this.#push({ event, id: this.id, ...fields } as unknown as Event);
    return this.#sink.writable;
  }

  fail(code: WireErrorCode, message: string): void {
    if (this.#ended) return;
    this.#push({ event: "error", id: this.id, code, message } as Event);
    this.end();
  }

  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#wakeUp();
    this.#onEnd?.();
  }

  ready(): Promise<void> {
    return this.#sink.ready();
  }

  /** Stops the request: the client went away ("disconnected") or the daemon stops. */
  abort(reason: AbortReason): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
  }

  #push(ev: Event): void {
    this.#queue.push(ev);
    this.#wakeUp();
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /** The events, in order; ends after the request's last one. */
  async *[Symbol.asyncIterator](): AsyncIterator<Event> {
    while (true) {
      if (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        yield* batch;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Every event of the request, once it ended. */
  async all(): Promise<Event[]> {
    const out: Event[] = [];
    for await (const ev of this) out.push(ev);
    return out;
  }
}
