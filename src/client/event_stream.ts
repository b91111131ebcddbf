import type { Message } from "../protocol/codec.ts";
import { errorFromEvent } from "./errors.ts";

/**
 * The events of one request, as an async iterator: `for await (const ev of stream)`.
 * An `error` event ends it by throwing the matching {@linkcode UmadError}. Leaving
 * the loop early calls `onAbandon` (the client sends `cancel` for generations).
 */
export class EventStream implements AsyncIterableIterator<Message> {
  readonly id: string;
  readonly #isLast: (event: Message) => boolean;
  readonly #onAbandon: () => void;
  #queue: Message[] = [];
  #waiter: { resolve: (r: IteratorResult<Message>) => void; reject: (e: Error) => void } | null =
    null;
  #done = false;
  #error: Error | null = null;

  constructor(id: string, isLast: (event: Message) => boolean, onAbandon: () => void) {
    this.id = id;
    this.#isLast = isLast;
    this.#onAbandon = onAbandon;
  }

  /** True once the last event (or an error) arrived. */
  get done(): boolean {
    return this.#done;
  }

  /** Delivers one event; returns true when it ended the stream. */
  push(event: Message): boolean {
    if (this.#done) return true;
    if (event.event === "error") {
      this.fail(errorFromEvent(event));
      return true;
    }
    const last = this.#isLast(event);
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve({ value: event, done: false });
    } else {
      this.#queue.push(event);
    }
    if (last) this.#done = true;
    return last;
  }

  /** Ends the stream with an error (after the events already queued). */
  fail(error: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      this.#error = null;
      w.reject(error);
    }
  }

  next(): Promise<IteratorResult<Message>> {
    const value = this.#queue.shift();
    if (value !== undefined) return Promise.resolve({ value, done: false });
    if (this.#error) {
      const e = this.#error;
      this.#error = null;
      return Promise.reject(e);
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiter = { resolve, reject });
  }

  return(): Promise<IteratorResult<Message>> {
    if (!this.#done) {
      this.#done = true;
      this.#onAbandon();
    }
    this.#queue = [];
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    return this;
  }
}
