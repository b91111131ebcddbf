/**
 * Terminal sessions over umad, shaped like node-pty: `spawn` / `attach` give a
 * {@linkcode Terminal} with `onData`, `onExit`, `write`, `resize`, `kill`. The session
 * lives in the daemon: detach and re-attach later, from another program too. After a
 * reconnect of the client, a terminal re-attaches by itself and its screen comes back
 * from the daemon's snapshot. Runtime-neutral (no `Deno.*`).
 *
 * @module
 */
import type { ReplyOf } from "../protocol/events.ts";
import type { Client } from "./client.ts";

/** The part of {@linkcode Client} a terminal uses. */
export type PtyClient = Pick<Client, "request" | "stream" | "send" | "onReconnect">;

/** Options of {@linkcode spawn} (node-pty's names). */
export interface SpawnOptions {
  /** Session name shown by `umad ls` (node-pty uses `name` for TERM; umad sets TERM itself). */
  name?: string;
  /** Width, columns (default 80). */
  cols?: number;
  /** Height, rows (default 24). */
  rows?: number;
  /** Working directory (default: the daemon's home). */
  cwd?: string;
  /** Merged over the daemon's environment. */
  env?: Record<string, string>;
  /** Re-attach after the client reconnects (default true). */
  reattach?: boolean;
}

/** Options of {@linkcode attach}. */
export interface AttachOptions {
  /** Watch only: `write` and `resize` throw. */
  readonly?: boolean;
  /** This client's width (it becomes the session's size once the client is active). */
  cols?: number;
  /** This client's height. */
  rows?: number;
  /** Re-attach after the client reconnects (default true). */
  reattach?: boolean;
}

/** How the program ended (node-pty's shape; `signal` is a name such as "SIGTERM"). */
export interface ExitEvent {
  /** The exit status; 0 when a signal ended the program (then `signal` is set). */
  exitCode: number;
  /** The signal that ended the program, if one did. */
  signal?: string;
}

/** A full redraw of the screen, as the daemon's emulator serialized it. */
export interface SnapshotEvent {
  /** Terminal output that redraws the screen (and scrollback) on a reset terminal. */
  data: Uint8Array;
  /** The screen's width, columns. */
  cols: number;
  /** The screen's height, rows. */
  rows: number;
}

/** Returned by the `on*` methods. */
export interface Disposable {
  /** Removes the listener. */
  dispose(): void;
}

/** Resets a terminal before a snapshot is drawn on it (RIS). */
const RESET = new Uint8Array([0x1b, 0x63]);

class Emitter<T> {
  #listeners = new Set<(value: T) => void>();
  on(cb: (value: T) => void): Disposable {
    this.#listeners.add(cb);
    return { dispose: () => this.#listeners.delete(cb) };
  }
  emit(value: T): void {
    for (const cb of [...this.#listeners]) cb(value);
  }
  get size(): number {
    return this.#listeners.size;
  }
}

type AttachEvent = ReplyOf<"pty.attach">;

/**
 * One attached terminal session.
 *
 * Output reaches `onBinary` as bytes and `onData` as text. A snapshot (on attach, on
 * re-attach, and after the daemon dropped a backlog this client was too slow for) is
 * delivered to `onSnapshot`, and to `onData`/`onBinary` as a terminal reset followed
 * by the redraw — so a terminal emulator fed from `onData` always shows the right
 * screen. The first snapshot after {@linkcode spawn} comes without the reset.
 */
export class Terminal {
  /** The daemon's session id. */
  readonly session: string;
  /** The program's pid (in the daemon's pid namespace). */
  readonly pid: number;
  /** Attached read-only. */
  readonly readonly: boolean;
  #client: PtyClient;
  #cols: number | undefined;
  #rows: number | undefined;
  #data = new Emitter<string>();
  #binary = new Emitter<Uint8Array>();
  #exit = new Emitter<ExitEvent>();
  #snapshot = new Emitter<SnapshotEvent>();
  #error = new Emitter<Error>();
  #decoder = new TextDecoder();
  #ended = false;
  #exitEvent: ExitEvent | undefined;
  #stream: AsyncIterableIterator<AttachEvent> | undefined;
  #reconnected: (() => void) | undefined;
  #offReconnect: () => void;
  #snapshots = 0;
  #resetFirst: boolean;
  #loop: Promise<void>;

  /** Use {@linkcode spawn} or {@linkcode attach}. */
  constructor(
    client: PtyClient,
    init: {
      session: string;
      pid: number;
      readonly?: boolean;
      cols?: number;
      rows?: number;
      reattach?: boolean;
      fresh?: boolean;
    },
  ) {
    this.#client = client;
    this.session = init.session;
    this.pid = init.pid;
    this.readonly = init.readonly ?? false;
    this.#cols = init.cols;
    this.#rows = init.rows;
    this.#resetFirst = !init.fresh;
    this.#offReconnect = init.reattach === false ? () => {} : client.onReconnect(() => {
      const r = this.#reconnected;
      this.#reconnected = undefined;
      r?.();
    });
    this.#loop = this.#run(init.reattach !== false);
  }

  /** Current width as this client knows it. */
  get cols(): number | undefined {
    return this.#cols;
  }
  /** Current height as this client knows it. */
  get rows(): number | undefined {
    return this.#rows;
  }

  /** Output as text (UTF-8, split characters held back). */
  onData(cb: (data: string) => void): Disposable {
    return this.#data.on(cb);
  }
  /** Output as bytes, exactly as the program wrote them. */
  onBinary(cb: (data: Uint8Array) => void): Disposable {
    return this.#binary.on(cb);
  }
  /** The program ended; fires after its last output. */
  onExit(cb: (e: ExitEvent) => void): Disposable {
    if (this.#exitEvent !== undefined) {
      const e = this.#exitEvent;
      queueMicrotask(() => cb(e));
    }
    return this.#exit.on(cb);
  }
  /** A full redraw arrived (see the class notes). */
  onSnapshot(cb: (s: SnapshotEvent) => void): Disposable {
    return this.#snapshot.on(cb);
  }
  /** The terminal stopped for a reason other than exit or detach (session gone, link lost). */
  onError(cb: (e: Error) => void): Disposable {
    return this.#error.on(cb);
  }

  /** Resolves when the terminal has ended (exit, detach or error). */
  get closed(): Promise<void> {
    return this.#loop;
  }

  /** Types into the session. */
  write(data: string | Uint8Array): void {
    if (this.readonly) throw new Error(`Cannot write to session "${this.session}": read-only`);
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.#client.send({ type: "pty.input", session: this.session, data: bytes });
  }

  /** Sets this client's size; the session takes it (latest active client wins). */
  resize(cols: number, rows: number): void {
    if (this.readonly) throw new Error(`Cannot resize session "${this.session}": read-only`);
    this.#cols = cols;
    this.#rows = rows;
    this.#client.send({ type: "pty.resize", session: this.session, cols, rows });
  }

  /** Signals the program (default SIGHUP); the session is removed once it exits. */
  async kill(signal?: string): Promise<void> {
    await this.#client.request({ type: "pty.kill", session: this.session, signal });
  }

  /** Stops watching; the session goes on in the daemon. */
  async detach(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    this.#reconnected?.();
    await this.#client.request({ type: "pty.detach", session: this.session }).catch(() => {});
    await this.#loop;
  }

  #emitBytes(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#binary.emit(bytes);
    if (this.#data.size > 0) {
      const text = this.#decoder.decode(bytes, { stream: true });
      if (text.length > 0) this.#data.emit(text);
    }
  }

  #onEvent(ev: AttachEvent): void {
    switch (ev.event) {
      case "pty.snapshot": {
        const { data, cols, rows } = ev;
        this.#decoder = new TextDecoder();
        this.#snapshot.emit({ data, cols, rows });
        if (this.#snapshots++ > 0 || this.#resetFirst) this.#emitBytes(RESET);
        this.#emitBytes(data);
        break;
      }
      case "pty.output":
        this.#emitBytes(ev.data);
        break;
      case "pty.exit": {
        this.#ended = true;
        const signal = typeof ev.signal === "string" ? ev.signal : undefined;
        const code = typeof ev.code === "number" ? ev.code : 0;
        this.#exitEvent = signal === undefined ? { exitCode: code } : { exitCode: code, signal };
        this.#exit.emit(this.#exitEvent);
        break;
      }
      case "pty.detached":
        this.#ended = true;
        break;
    }
  }

  async #run(reattach: boolean): Promise<void> {
    try {
      while (!this.#ended) {
        try {
          const sized = this.#cols !== undefined && this.#rows !== undefined;
          this.#stream = this.#client.stream({
            type: "pty.attach",
            session: this.session,
            readonly: this.readonly || undefined,
            cols: sized ? this.#cols : undefined,
            rows: sized ? this.#rows : undefined,
          });
          for await (const ev of this.#stream) this.#onEvent(ev);
          if (!this.#ended) throw new Error("attach stream ended");
        } catch (e) {
          if (this.#ended) return;
          const code = (e as { code?: string }).code;
          const linkLost = code === "E_CLOSED" || code === "E_TIMEOUT" || code === undefined;
          if (!reattach || !linkLost) {
            this.#ended = true;
            this.#error.emit(e as Error);
            return;
          }
          // Wait for the client to reconnect, then attach again (snapshot restores).
          await new Promise<void>((resolve) => this.#reconnected = resolve);
        }
      }
    } finally {
      this.#offReconnect();
    }
  }
}

/**
 * Starts a program in a new daemon session and attaches to it.
 *
 * @example
 * ```ts ignore
 * const client = await connect();
 * const term = await spawn(client, "bash", [], { cols: 100, rows: 30, cwd: "/tmp" });
 * term.onData((d) => console.log(d));
 * term.onExit(({ exitCode }) => console.log("exit", exitCode));
 * term.write("ls\r");
 * ```
 */
export async function spawn(
  client: PtyClient,
  file: string,
  args: string[] = [],
  options: SpawnOptions = {},
): Promise<Terminal> {
  const { name, cols, rows, cwd, env } = options;
  const reply = await client.request({
    type: "pty.spawn",
    argv: [file, ...args],
    name,
    cols,
    rows,
    cwd,
    env,
  });
  return new Terminal(client, {
    session: reply.session,
    pid: reply.pid,
    cols: options.cols ?? 80,
    rows: options.rows ?? 24,
    reattach: options.reattach,
    fresh: true,
  });
}

/**
 * Attaches to an existing session (by id, or by name when only one has it).
 *
 * @example
 * ```ts ignore
 * const term = await attach(client, "a1b2c3d4", { readonly: true });
 * term.onData((d) => console.log(d));
 * ```
 */
export async function attach(
  client: PtyClient,
  session: string,
  options: AttachOptions = {},
): Promise<Terminal> {
  const { sessions } = await client.request({ type: "pty.list" });
  const found = sessions.find((s) => s.session === session) ??
    (sessions.filter((s) => s.name === session).length === 1
      ? sessions.find((s) => s.name === session)
      : undefined);
  return new Terminal(client, {
    session: found?.session ?? session, // unknown: the attach itself reports E_NOT_FOUND
    pid: found?.pid ?? 0,
    readonly: options.readonly,
    cols: options.cols,
    rows: options.rows,
    reattach: options.reattach,
  });
}
