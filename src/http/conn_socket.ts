/**
 * A `node:stream` Duplex over a Deno connection whose first bytes were already read,
 * shaped like the `net.Socket` that `node:http`'s server expects: it is what lets
 * `node:http` (llhttp, keep-alive, chunked encoding, header limits, timeouts) serve a
 * connection the framed side sniffed first.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";

const READ_SIZE = 64 * 1024;

/**
 * The Duplex `node:http` reads requests from and writes responses to. Reading pauses
 * while `node:http` is not consuming (its own backpressure); `_writev` turns the pieces
 * of one chunked write (size line, data, CRLF) into one socket write.
 *
 * @example
 * ```ts ignore
 * import http from "node:http";
 * const server = http.createServer((_req, res) => res.end("ok"));
 * const conn = await listener.accept();
 * server.emit("connection", new ConnSocket(conn, firstBytes));
 * ```
 */
export class ConnSocket extends Duplex {
  readonly #conn: Deno.Conn;
  readonly #onTraffic: ((read: number, written: number) => void) | undefined;
  #pumping = false;
  #wanted = false;
  #idleMs = 0;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** The peer, as `net.Socket` names it ("unix" on a Unix socket). */
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly remoteFamily: string;

  /**
   * Wraps `conn`; `head` are bytes already read from it, delivered first. `onTraffic`
   * hears of every read and write, for the daemon's byte counters.
   */
  constructor(
    conn: Deno.Conn,
    head: Uint8Array,
    onTraffic?: (read: number, written: number) => void,
  ) {
    super({ allowHalfOpen: true });
    this.#conn = conn;
    this.#onTraffic = onTraffic;
    const addr = conn.remoteAddr;
    if (addr.transport === "tcp" || addr.transport === "udp") {
      this.remoteAddress = addr.hostname;
      this.remotePort = addr.port;
      this.remoteFamily = addr.hostname.includes(":") ? "IPv6" : "IPv4";
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch { /* not a TCP connection after all */ }
    } else {
      this.remoteAddress = "unix";
      this.remotePort = 0;
      this.remoteFamily = "unix";
    }
    if (head.length > 0) this.push(Buffer.from(head));
  }

  override _read(): void {
    this.#wanted = true;
    if (!this.#pumping) void this.#pump();
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    const buf = new Uint8Array(READ_SIZE);
    try {
      while (this.#wanted && !this.destroyed) {
        const n = await this.#conn.read(buf);
        if (n === null) {
          this.push(null);
          return;
        }
        this.#touch();
        this.#onTraffic?.(n, 0);
        // push copies nothing: hand it a copy, since buf is read into again.
        this.#wanted = this.push(Buffer.from(buf.subarray(0, n)));
      }
    } catch (e) {
      if (!this.destroyed) this.destroy(e as Error);
    } finally {
      this.#pumping = false;
    }
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
    this.#touch();
    this.#onTraffic?.(0, bytes.length);
  }

  override _write(
    chunk: Uint8Array,
    _encoding: string,
    done: (error?: Error | null) => void,
  ): void {
    this.#writeAll(chunk).then(() => done(), done);
  }

  override _writev(
    chunks: { chunk: Uint8Array }[],
    done: (error?: Error | null) => void,
  ): void {
    let total = 0;
    for (const c of chunks) total += c.chunk.length;
    const bytes = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
      bytes.set(c.chunk, off);
      off += c.chunk.length;
    }
    this.#writeAll(bytes).then(() => done(), done);
  }

  override _final(done: (error?: Error | null) => void): void {
    try {
      (this.#conn as Deno.UnixConn).closeWrite();
    } catch { /* closed already */ }
    done();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    clearTimeout(this.#idleTimer);
    try {
      this.#conn.close();
    } catch { /* closed already */ }
    done(error);
  }

  #touch(): void {
    if (this.#idleMs <= 0) return;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => this.emit("timeout"), this.#idleMs);
  }

  /** `net.Socket#setTimeout`: emits "timeout" after `ms` without reads or writes. */
  setTimeout(ms: number, onTimeout?: () => void): this {
    this.#idleMs = ms;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    if (onTimeout) this.once("timeout", onTimeout);
    this.#touch();
    return this;
  }

  /** `net.Socket#setNoDelay` (already on for TCP). */
  setNoDelay(_noDelay?: boolean): this {
    return this;
  }

  /** `net.Socket#setKeepAlive`: TCP keep-alive probes. */
  setKeepAlive(enable?: boolean): this {
    try {
      (this.#conn as Deno.TcpConn).setKeepAlive(enable ?? false);
    } catch { /* not TCP */ }
    return this;
  }

  /** `net.Socket#destroySoon`: ends, and destroys once everything is written. */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once("finish", () => this.destroy());
  }
}
