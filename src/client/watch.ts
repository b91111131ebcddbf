/**
 * Session lifecycle events as an async iterator: {@linkcode watch}. Runtime-neutral.
 *
 * @module
 */
import type { WatchEventFields } from "../protocol/events.ts";
import type { PtyClient } from "./terminal.ts";

/** One `watch.event`: a session was created, exited, resized or retitled (the wire type). */
export type WatchEvent = WatchEventFields;

/** Options of {@linkcode watch}. */
export interface WatchOptions {
  /** Only these sessions (ids or names); default all, those created later included. */
  sessions?: string[];
}

/**
 * Events of sessions until the loop is left (which cancels the watch) or the connection
 * drops (the iterator then throws).
 *
 * @example
 * ```ts ignore
 * for await (const ev of watch(client)) {
 *   if (ev.kind === "exited") console.log(ev.session, "exited with", ev.code);
 * }
 * ```
 */
export function watch(
  client: PtyClient,
  options: WatchOptions = {},
): AsyncIterableIterator<WatchEvent> {
  // A watch never ends by itself; leaving the stream cancels it at the daemon.
  const stream = client.stream({ type: "watch", sessions: options.sessions });
  const it: AsyncIterableIterator<WatchEvent> = {
    async next(): Promise<IteratorResult<WatchEvent>> {
      const r = await stream.next();
      if (r.done) return { value: undefined, done: true };
      const { event: _e, id: _i, ...fields } = r.value;
      return { value: fields as WatchEvent, done: false };
    },
    async return(): Promise<IteratorResult<WatchEvent>> {
      await stream.return();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}
