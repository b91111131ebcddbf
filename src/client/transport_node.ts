/**
 * The Unix-socket {@linkcode Transport} under Node and Bun, on `node:net`.
 *
 * @module
 */
import { createConnection, type Socket } from "node:net";
import { AsyncQueue } from "../protocol/async.ts";
import type { Transport } from "./transport.ts";

/**
 * Connects to the Unix socket at `path` with `node:net`.
 *
 * @example
 * ```ts ignore
 * import { dialNode } from "./transport_node.ts";
 * const transport = await dialNode("/tmp/umad-1000/umad.sock");
 * await transport.close(200);
 * ```
 */
export function dialNode(path: string): Promise<Transport> {
  return new Promise<Transport>((resolve, reject) => {
    const s: Socket = createConnection({ path });
    s.once("connect", () => {
      s.removeAllListeners("error");
      const inbox = new AsyncQueue<Uint8Array>(() => s.destroy());
      s.on("error", () => {});
      s.on("data", (chunk: Uint8Array) => inbox.push(chunk));
      s.on("close", () => inbox.end());
      resolve({
        send(bytes) {
          if (!s.destroyed) s.write(bytes);
        },
        close(graceMs) {
          return new Promise<void>((done) => {
            if (s.destroyed) return done();
            const timer = setTimeout(() => s.destroy(), graceMs);
            s.once("close", () => {
              clearTimeout(timer);
              done();
            });
            s.end();
          });
        },
        destroy() {
          s.destroy();
        },
        [Symbol.asyncIterator]: () => inbox,
      });
    });
    s.once("error", reject);
  });
}
