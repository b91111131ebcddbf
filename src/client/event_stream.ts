/**
 * The events of one request as an async iterator.
 *
 * @module
 */
import { AsyncQueue } from "../protocol/async.ts";
import type { Message } from "../protocol/codec.ts";
import { errorFromEvent } from "./errors.ts";

/**
 * The events of one request, as an async iterator: `for await (const ev of stream)`.
 * An `error` event ends it by throwing the matching {@linkcode UmadError}. Leaving the
 * loop before the last event calls `onAbandon` (the client then cancels the request:
 * a generation stops, an attach detaches, a watch ends). Several `next()` calls may
 * wait at once; each gets its own event.
 *
 * @example
 * ```ts
 * import { EventStream } from "./event_stream.ts";
 * const stream = new EventStream("c1", (ev) => ev.event === "eos", () => {});
 * stream.push({ event: "token", id: "c1", text: "Hi" });
 * stream.push({ event: "eos", id: "c1", reason: "stop" });
 * for await (const ev of stream) console.log(ev.event); // token, then eos
 * ```
 */
export class EventStream<E = Message> implements AsyncIterableIterator<E> {
  /** The id of the request whose events these are. */
  readonly id: string;
  readonly #isLast: (event: E) => boolean;
  readonly #queue: AsyncQueue<E>;

  /**
   * A stream ending at the first event for which `isLast` is true, or at an error;
   * `onAbandon` runs if the reader stops before that.
   */
  constructor(id: string, isLast: (event: E) => boolean, onAbandon: () => void) {
    this.id = id;
    this.#isLast = isLast;
    this.#queue = new AsyncQueue<E>(onAbandon);
  }

  /** True once the last event or an error arrived, or the reader stopped. */
  get done(): boolean {
    return this.#queue.ended;
  }

  /** Delivers one event as it arrived; returns true when it ended the stream. */
  push(event: Message): boolean {
    if (this.#queue.ended) return true;
    if (event.event === "error") {
      this.#queue.fail(errorFromEvent(event));
      return true;
    }
    this.#queue.push(event as E);
    if (!this.#isLast(event as E)) return false;
    this.#queue.end();
    return true;
  }

  /** Ends the stream with an error (after the events already queued). */
  fail(error: Error): void {
    this.#queue.fail(error);
  }

  /** The next event; `done` after the last one; rejects with the stream's error. */
  next(): Promise<IteratorResult<E>> {
    return this.#queue.next();
  }

  /** Stops reading; before the last event this cancels the request. */
  return(): Promise<IteratorResult<E>> {
    return this.#queue.return();
  }

  /** The stream itself (one reader walks it with `for await`). */
  [Symbol.asyncIterator](): AsyncIterableIterator<E> {
    return this;
  }
}
