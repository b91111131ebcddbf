/**
 * The byte pipe under a {@linkcode Client}: a Unix socket, opened with `Deno.connect`
 * where the runtime has it and with `node:net` elsewhere (Node, Bun). Under Deno the
 * native socket skips node:net's compatibility layers (stream wraps, Buffers, nextTick
 * hops): measured here, it halves the client-side share of a keystroke's echo tail.
 */
import { createConnection, type Socket } from "node:net";
import { concat } from "../protocol/bytes.ts";

/** What a transport reports. */
export interface TransportEvents {
  /** Bytes in arrival order; the chunk is the receiver's to keep. */
  onData(chunk: Uint8Array): void;
  /** Called once, when the connection is gone (by either side, or an error). */
  onClose(): void;
}

/** An open connection. */
export interface Transport {
  /** Queues bytes; they go out in order. Ignored once closed. */
  write(bytes: Uint8Array): void;
  /** Ends the sending side; resolves when closed (forced after `graceMs`). */
  end(graceMs: number): Promise<void>;
  /** Closes at once. */
  destroy(): void;
}

/** The part of `Deno.Conn` used here (the npm build has no Deno types). */
interface DenoConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}

interface DenoRuntime {
  connect(options: { transport: "unix"; path: string }): Promise<DenoConn>;
}

function denoRuntime(): DenoRuntime | null {
  const d = (globalThis as unknown as { Deno?: { connect?: unknown } }).Deno;
  return d && typeof d.connect === "function" ? d as DenoRuntime : null;
}

/**
 * Connects to the Unix socket at `path`. Rejects with the runtime's error (its `message`
 * says why: no such file, refused, permission).
 */
export function dial(path: string, events: TransportEvents): Promise<Transport> {
  const deno = denoRuntime();
  return deno ? dialDeno(deno, path, events) : dialNode(path, events);
}

const READ_BUFFER = 64 * 1024;

async function dialDeno(
  deno: DenoRuntime,
  path: string,
  events: TransportEvents,
): Promise<Transport> {
  const conn = await deno.connect({ transport: "unix", path });
  let closed = false;
  let closedResolve!: () => void;
  const closedPromise = new Promise<void>((r) => (closedResolve = r));
  const finish = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch {
      // already closed
    }
    closedResolve();
    events.onClose();
  };

  // One write in flight; frames queued meanwhile go out together.
  let queue: Uint8Array[] = [];
  let pumping: Promise<void> | null = null;
  const pump = async () => {
    try {
      while (queue.length > 0 && !closed) {
        const parts = queue;
        queue = [];
        let buf = concat(parts);
        while (buf.length > 0) {
          const n = await conn.write(buf);
          buf = buf.subarray(n);
        }
      }
    } catch {
      finish();
    }
  };
  // `.then` runs after the assignment, so `pumping` is never left set by a pump that
  // ended at once.
  const startPump = () => {
    pumping ??= pump().then(() => {
      pumping = null;
    });
  };

  (async () => {
    const buf = new Uint8Array(READ_BUFFER);
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        // A copy: decoded messages may keep views of it after the next read.
        events.onData(buf.slice(0, n));
      }
    } catch {
      // reset or closed by us
    }
    finish();
  })();

  return {
    write(bytes) {
      if (closed) return;
      queue.push(bytes);
      startPump();
    },
    async end(graceMs) {
      if (closed) return;
      const timer = setTimeout(finish, graceMs);
      try {
        while (pumping) await pumping;
        if (!closed) await conn.closeWrite();
      } catch {
        finish();
      }
      await closedPromise;
      clearTimeout(timer);
    },
    destroy: finish,
  };
}

function dialNode(path: string, events: TransportEvents): Promise<Transport> {
  return new Promise<Transport>((resolve, reject) => {
    const s: Socket = createConnection({ path });
    s.once("connect", () => {
      s.removeAllListeners("error");
      s.on("error", () => {});
      s.on("data", (chunk: Uint8Array) => events.onData(chunk));
      s.on("close", () => events.onClose());
      resolve({
        write(bytes) {
          if (!s.destroyed) s.write(bytes);
        },
        end(graceMs) {
          return new Promise<void>((done) => {
            if (s.destroyed) return done();
            s.once("close", () => done());
            s.end();
            setTimeout(() => s.destroy(), graceMs);
          });
        },
        destroy() {
          s.destroy();
        },
      });
    });
    s.once("error", reject);
  });
}
