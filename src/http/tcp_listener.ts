/**
 * `--http HOST:PORT`: where the TCP endpoint listens (loopback unless the user names
 * another address) and an accept loop that survives accept errors (out of descriptors
 * included), handing each connection to the daemon.
 *
 * @module
 */
import { delay } from "../protocol/async.ts";
import { UsageError } from "../protocol/errors.ts";

/** A TCP address to listen on. */
export interface TcpAddress {
  /** An IPv4 or IPv6 address, or a name. */
  hostname: string;
  /** 0: the system picks one. */
  port: number;
}

/**
 * Parses `--http`'s value: `HOST:PORT`, `[IPv6]:PORT`, `:PORT` or `PORT` (the last
 * two on loopback). Throws {@linkcode UsageError} for anything else.
 *
 * @example
 * ```ts
 * import { parseHttpAddress } from "./tcp_listener.ts";
 * console.log(parseHttpAddress("11435")); // { hostname: "127.0.0.1", port: 11435 }
 * console.log(parseHttpAddress("[::1]:8080")); // { hostname: "::1", port: 8080 }
 * ```
 */
export function parseHttpAddress(value: string): TcpAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(value) ??
    /^()()(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new UsageError(
      `--http must be HOST:PORT, [IPv6]:PORT or PORT (loopback), got "${value}"`,
    );
  }
  const hostname = m[1] || m[2] || "127.0.0.1";
  return { hostname, port };
}

/**
 * True for addresses only this machine can reach.
 *
 * @example
 * ```ts
 * import { isLoopback } from "./tcp_listener.ts";
 * console.log(isLoopback("127.0.0.1"), isLoopback("0.0.0.0")); // true false
 * ```
 */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\./.test(hostname);
}

/** A listening TCP endpoint. */
export interface TcpEndpoint {
  /** Where it listens (the port the system chose, for port 0). */
  readonly address: TcpAddress;
  /** Stops accepting. */
  close(): void;
}

/**
 * Listens on `address` and hands every connection to `onConnection`. Accept errors
 * (EMFILE when the process is out of descriptors, ECONNABORTED) pause the loop briefly
 * and are logged once per burst; the loop ends only when closed.
 */
export function listenTcp(
  address: TcpAddress,
  onConnection: (conn: Deno.TcpConn) => void,
  log: (level: "warn" | "error", message: string) => void,
): TcpEndpoint {
  const listener = Deno.listen({
    transport: "tcp",
    hostname: address.hostname,
    port: address.port,
  });
  let closed = false;
  void (async () => {
    let failing = false;
    while (!closed) {
      try {
        const conn = await listener.accept();
        failing = false;
        onConnection(conn);
      } catch (e) {
        if (closed) return;
        if (!failing) log("error", `http accept failed (retrying): ${e}`);
        failing = true;
        await delay(50);
      }
    }
  })();
  const local = listener.addr as Deno.NetAddr;
  return {
    address: { hostname: local.hostname, port: local.port },
    close() {
      closed = true;
      try {
        listener.close();
      } catch { /* already closed */ }
    },
  };
}
