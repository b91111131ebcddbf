/**
 * An in-memory {@linkcode Transport} pair: what one end sends, the other end reads.
 * For testing the client (or code built on it) against a fake daemon without sockets.
 *
 * @module
 */
import { AsyncQueue, deferred } from "../protocol/async.ts";
import type { Transport } from "./transport.ts";

/**
 * Two connected ends. Bytes are delivered in order (as copies); `close` or `destroy` on
 * either end closes both, after the bytes already sent are read.
 *
 * @example
 * ```ts
 * import { memoryPipe } from "./memory_transport.ts";
 * const [client, daemon] = memoryPipe();
 * client.send(new Uint8Array([1, 2, 3]));
 * await client.close(0);
 * for await (const chunk of daemon) console.log(chunk); // Uint8Array(3) [ 1, 2, 3 ]
 * ```
 */
export function memoryPipe(): [Transport, Transport] {
  const toA = new AsyncQueue<Uint8Array>();
  const toB = new AsyncQueue<Uint8Array>();
  const closed = deferred<void>();
  let open = true;
  const shut = () => {
    if (!open) return;
    open = false;
    toA.end();
    toB.end();
    closed.resolve();
  };
  const end = (inbox: AsyncQueue<Uint8Array>, outbox: AsyncQueue<Uint8Array>): Transport => ({
    send(bytes) {
      if (open) outbox.push(bytes.slice());
    },
    close() {
      shut();
      return closed.promise;
    },
    destroy: shut,
    [Symbol.asyncIterator]: () => inbox,
  });
  return [end(toA, toB), end(toB, toA)];
}
