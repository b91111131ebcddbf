// Test helpers for HTTP: a daemon with `--http` on a port the system picks, a fetch that
// dials the daemon's Unix socket, and raw HTTP over the socket for malformed requests.
import { delay } from "../src/protocol/async.ts";
import { RawClient, startDaemon, type TestDaemon } from "./_daemon.ts";

/** A daemon serving HTTP on its socket and on loopback TCP. */
export interface HttpDaemon extends TestDaemon {
  /** `http://127.0.0.1:PORT`. */
  base: string;
  /** The bearer token from the token file beside the socket (null with --http-no-auth). */
  token: string | null;
}

/** Starts `umad serve --http 127.0.0.1:0` plus `args`; reads the port from `hello`. */
export async function startHttpDaemon(
  args: string[],
  opts: { withModel?: boolean } = {},
): Promise<HttpDaemon> {
  const d = await startDaemon(["--http", "127.0.0.1:0", ...args], opts);
  try {
    const c = await RawClient.connect(d.socket);
    const hello = await c.request({ type: "hello", id: "h" });
    c.close();
    const http = hello.http as { tcp: string; token_file?: string };
    const token = http.token_file ? Deno.readTextFileSync(http.token_file).trim() : null;
    return { ...d, base: http.tcp, token };
  } catch (e) {
    console.error(d.stderr());
    await d.stop();
    throw e;
  }
}

/** A `fetch` whose connections go to the Unix socket at `socket` (any host in the URL). */
export function unixFetch(socket: string): { fetch: typeof fetch; close(): void } {
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path: socket } });
  return {
    fetch: (input, init) => fetch(input, { ...init, client }),
    close: () => client.close(),
  };
}

/** One raw connection to the socket, for requests a well-behaved client would not send. */
export class RawHttp {
  readonly conn: Deno.UnixConn;
  #buf = "";
  #closed = false;
  readonly #dec = new TextDecoder();
  readonly done: Promise<void>;

  private constructor(conn: Deno.UnixConn) {
    this.conn = conn;
    this.done = this.#read();
  }

  static async connect(socket: string): Promise<RawHttp> {
    return new RawHttp(await Deno.connect({ transport: "unix", path: socket }));
  }

  async #read(): Promise<void> {
    const b = new Uint8Array(65536);
    try {
      while (true) {
        const n = await this.conn.read(b);
        if (n === null) break;
        this.#buf += this.#dec.decode(b.subarray(0, n), { stream: true });
      }
    } catch { /* reset by the daemon */ }
    this.#closed = true;
  }

  /** Writes bytes; false when the daemon already closed the connection. */
  async write(data: string | Uint8Array): Promise<boolean> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    try {
      let off = 0;
      while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
      return true;
    } catch {
      return false;
    }
  }

  /** Everything received so far. */
  get received(): string {
    return this.#buf;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Waits until `pred(received)` holds or the connection closes (then returns received). */
  async until(pred: (s: string) => boolean, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.#buf) && !this.#closed) {
      if (Date.now() > deadline) throw new Error(`timed out; got ${this.#buf.slice(0, 300)}`);
      await delay(10);
    }
    return this.#buf;
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

/** The complete HTTP/1.1 responses in `text` (Content-Length or chunked bodies). */
export function parseResponses(
  text: string,
): { status: number; headers: Record<string, string>; body: string }[] {
  const out: { status: number; headers: Record<string, string>; body: string }[] = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) break;
    const [line, ...lines] = rest.slice(0, end).split("\r\n");
    const status = Number(line.split(" ")[1]);
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(":");
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    rest = rest.slice(end + 4);
    let body = "";
    if (headers["transfer-encoding"] === "chunked") {
      while (true) {
        const nl = rest.indexOf("\r\n");
        if (nl < 0) return out;
        const size = parseInt(rest.slice(0, nl), 16);
        body += rest.slice(nl + 2, nl + 2 + size);
        rest = rest.slice(nl + 2 + size + 2);
        if (size === 0) break;
      }
    } else {
      const len = Number(headers["content-length"] ?? 0);
      body = rest.slice(0, len);
      rest = rest.slice(len);
    }
    out.push({ status, headers, body });
  }
  return out;
}

/** Reads a metrics value by path through the framed protocol. */
export async function metricsOf(socket: string): Promise<Record<string, unknown>> {
  const c = await RawClient.connect(socket);
  try {
    const m = await c.request({ type: "metrics", id: "m" });
    return m.metrics as Record<string, unknown>;
  } finally {
    c.close();
  }
}
