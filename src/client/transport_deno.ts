/**
 * The Unix-socket {@linkcode Transport} under Deno, on `Deno.connect`. It skips
 * node:net's compatibility layers (stream wraps, Buffers, nextTick hops): measured
 * here, that halves the client-side share of a keystroke's echo tail. Typed without
 * Deno's global types, so the npm build (Node's types only) compiles it.
 *
 * @module
 */
import { concat } from "../protocol/bytes.ts";
import { deferred } from "../protocol/async.ts";
import type { Transport } from "./transport.ts";

/** The part of `Deno.Conn` used here. */
interface DenoConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}

/** The part of the `Deno` namespace used here. */
interface DenoNamespace {
  connect(options: { transport: "unix"; path: string }): Promise<DenoConn>;
}

const READ_BUFFER = 64 * 1024;

/**
 * Connects to the Unix socket at `path` with `Deno.connect`.
 *
 * @example
 * ```ts ignore
 * import { dialDeno } from "./transport_deno.ts";
 * const transport = await dialDeno("/tmp/umad-1000/umad.sock");
 * await transport.close(200);
 * ```
 */
export async function dialDeno(path: string): Promise<Transport> {
  const deno = (globalThis as unknown as { Deno: DenoNamespace }).Deno;
  const conn = await deno.connect({ transport: "unix", path });
  let open = true;
  const closed = deferred<void>();
  const finish = () => {
    if (!open) return;
    open = false;
    try {
      conn.close();
    } catch {
      // already closed
    }
    closed.resolve();
  };

  // One write in flight; bytes queued meanwhile go out together. `pumping` is cleared
  // in the same turn as the loop's last look at the queue, so no bytes are left behind.
  let queue: Uint8Array[] = [];
  let pumping = false;
  let pumped: Promise<void> = Promise.resolve();
  const pump = async () => {
    pumping = true;
    try {
      while (queue.length > 0 && open) {
        let buf = concat(queue);
        queue = [];
        while (buf.length > 0) buf = buf.subarray(await conn.write(buf));
      }
    } catch {
      finish();
    } finally {
      pumping = false;
    }
  };

  const buf = new Uint8Array(READ_BUFFER);
  const reader: AsyncIterableIterator<Uint8Array> = {
    async next() {
      if (open) {
        try {
          const n = await conn.read(buf);
          // A copy: decoded messages may keep views of it after the next read.
          if (n !== null) return { value: buf.slice(0, n), done: false };
        } catch {
          // reset, or closed by us
        }
        finish();
      }
      return { value: undefined, done: true };
    },
    return() {
      finish();
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };

  return {
    send(bytes) {
      if (!open) return;
      queue.push(bytes);
      if (!pumping) pumped = pump();
    },
    async close(graceMs) {
      if (!open) return;
      const timer = setTimeout(finish, graceMs);
      try {
        while (pumping) await pumped;
        if (open) await conn.closeWrite();
      } catch {
        finish();
      }
      await closed.promise;
      clearTimeout(timer);
    },
    destroy: finish,
    [Symbol.asyncIterator]: () => reader,
  };
}
