/**
 * Session lifecycle events as an async iterator: {@linkcode watch}. Runtime-neutral.
 *
 * @module
 */
import type { Message } from "../protocol/codec.ts";
import type { ExitReason, WatchKind } from "../protocol/events.ts";
import type { PtyClient } from "./terminal.ts";

/** One `watch.event`: a session was created, exited, resized or retitled. */
export interface WatchEvent {
  kind: WatchKind;
  session: string;
  /** created: */
  name?: string;
  pid?: number;
  /** created, resized: */
  cols?: number;
  rows?: number;
  /** exited: */
  code?: number | null;
  signal?: string | null;
  reason?: ExitReason;
  /** title: */
  title?: string;
}

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
  const msg: Message = { type: "watch" };
  if (options.sessions !== undefined) msg.sessions = options.sessions;
  const stream = client.stream(msg, () => false);
  const it: AsyncIterableIterator<WatchEvent> = {
    async next(): Promise<IteratorResult<WatchEvent>> {
      const r = await stream.next();
      if (r.done) return { value: undefined, done: true };
      const { event: _e, id: _i, ...fields } = r.value as Message;
      return { value: fields as unknown as WatchEvent, done: false };
    },
    async return(): Promise<IteratorResult<WatchEvent>> {
      // The stream never ends by itself: tell the daemon to stop it.
      if (stream.id) client.send({ type: "cancel", target: stream.id });
      await stream.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}
