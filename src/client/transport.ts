/**
 * The byte channel under a {@linkcode Client}, injected so the client's core knows
 * nothing about the runtime (as nats.js's `Transport`): a Unix socket under Deno
 * (`transport_deno.ts`) or Node and Bun (`transport_node.ts`), or an in-memory pipe in
 * tests (`memory_transport.ts`).
 *
 * @module
 */

/**
 * An open connection: read it with `for await` (chunks in arrival order, each the
 * reader's to keep; the iteration ends when the connection is gone, by either side),
 * write it with `send`.
 */
export interface Transport extends AsyncIterable<Uint8Array> {
  /** Queues bytes; they go out in order. Ignored once closed. */
  send(bytes: Uint8Array): void;
  /**
   * Sends what is queued, ends the sending side and resolves once the connection is
   * closed (forced after `graceMs`).
   */
  close(graceMs: number): Promise<void>;
  /** Closes at once; queued bytes are dropped and the reading side ends. */
  destroy(): void;
}

/**
 * Opens a {@linkcode Transport} to the socket at `path`; rejects with an error whose
 * message says why (no such file, refused, permission).
 *
 * @example
 * ```ts
 * import type { Dialer } from "./transport.ts";
 * import { memoryPipe } from "./memory_transport.ts";
 * const dialer: Dialer = () => Promise.resolve(memoryPipe()[0]);
 * const transport = await dialer("/tmp/umad-1000/umad.sock");
 * transport.destroy();
 * ```
 */
export type Dialer = (path: string) => Promise<Transport>;
