/**
 * Terminal sessions over umad, shaped like node-pty: `spawn` / `attach` give a
 * {@linkcode Terminal} with `onData`, `onExit`, `write`, `resize`, `kill`, `pause`,
 * `resume`, `process`, `cols`, `rows`, `pid`, and node-pty's older `on("data")` /
 * `on("exit")`. The session lives in the daemon: detach and re-attach later, from another
 * program too. After a reconnect of the client, a terminal re-attaches by itself and its
 * screen comes back from the daemon's snapshot. Runtime-neutral (no `Deno.*`).
 *
 * @module
 */
import { delay } from "../protocol/async.ts";
import { constants as osConstants } from "node:os";
import { ConnectionClosedError, SpawnError } from "../protocol/errors.ts";
import type { ExitReason, ReplyOf } from "../protocol/events.ts";
import type { Client } from "./client.ts";

/** The part of {@linkcode Client} a terminal uses. */
export type PtyClient = Pick<Client, "request" | "stream" | "send" | "onReconnect">;

/** What `onData` delivers: text for an encoding (default `"utf8"`), bytes for `null`. */
export type TerminalData = string | Uint8Array;

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
  /**
   * How `onData` delivers output: decoded with this encoding (default `"utf8"`; any label
   * `TextDecoder` knows), or as bytes with `null` (a `Buffer` where the runtime has one).
   */
  encoding?: string | null;
  /** Re-attach after the client reconnects (default true). */
  reattach?: boolean;
  /**
   * A program that cannot be started: `"reject"` (default) rejects with
   * {@linkcode SpawnError} (`code` `"E_SPAWN"`, the cause in the message); `"exit"` does
   * what node-pty does: the terminal prints `execvp(3) failed.: <cause>` and exits with
   * code 1.
   */
  spawnError?: "reject" | "exit";
}

/** Options of {@linkcode attach}. */
export interface AttachOptions {
  /** Watch only: `write` and `resize` throw. */
  readonly?: boolean;
  /** This client's width (it becomes the session's size once the client is active). */
  cols?: number;
  /** This client's height. */
  rows?: number;
  /** As {@linkcode SpawnOptions.encoding}. */
  encoding?: string | null;
  /** Re-attach after the client reconnects (default true). */
  reattach?: boolean;
  /**
   * Reset the terminal (RIS) before the first snapshot (default true: it redraws the
   * whole screen). False for a session just spawned, whose first snapshot is empty.
   */
  reset?: boolean;
}

/** How the program ended (node-pty's shape; `signal` is a name such as "SIGTERM"). */
export interface ExitEvent {
  /** The exit status; 0 when a signal ended the program (then `signal` is set). */
  exitCode: number;
  /** The signal's name, when a signal ended the program. */
  signal?: string;
  /** The signal's number on this platform (what node-pty reports as `signal`). */
  signalNumber?: number;
  /** Why: the program ended by itself, was killed (`pty.kill`), or the daemon shut down. */
  reason?: ExitReason;
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

/**
 * Listeners of one event. One that throws is reported and does not stop the others,
 * nor the terminal (a throwing `onData` listener must not wedge `closed` or `onExit`).
 */
class Emitter<T extends unknown[]> {
  #listeners = new Set<(...value: T) => void>();
  on(cb: (...value: T) => void): Disposable {
    this.#listeners.add(cb);
    return { dispose: () => this.#listeners.delete(cb) };
  }
  emit(...value: T): void {
    for (const cb of [...this.#listeners]) {
      try {
        cb(...value);
      } catch (e) {
        console.error("umad-client: a terminal listener threw:", e);
      }
    }
  }
  get size(): number {
    return this.#listeners.size;
  }
}

/** Bytes as node-pty users get them with `encoding: null`: a Buffer where there is one. */
function asBuffer(bytes: Uint8Array): Uint8Array {
  const B = (globalThis as {
    Buffer?: { from(b: ArrayBufferLike, o: number, n: number): Uint8Array };
  }).Buffer;
  return B === undefined ? bytes : B.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function signalNumber(name: string): number | undefined {
  return (osConstants?.signals as Record<string, number> | undefined)?.[name];
}

type AttachEvent = ReplyOf<"pty.attach">;

const isEnd = (ev: AttachEvent) => ev.event === "pty.exit" || ev.event === "pty.detached";

/** Events held while the terminal is paused. */
const HELD: ReadonlySet<string> = new Set([
  "pty.snapshot",
  "pty.output",
  "pty.exit",
  "pty.detached",
]);

/**
 * One attached terminal session.
 *
 * Output reaches `onBinary` as bytes and `onData` as text (or bytes, with
 * `encoding: null`). A snapshot (on attach, on re-attach, and after the daemon dropped a
 * backlog this client was too slow for) is delivered to `onSnapshot`, and to
 * `onData`/`onBinary` as a terminal reset followed by the redraw — so a terminal emulator
 * fed from `onData` always shows the right screen. The first snapshot after
 * {@linkcode spawn} comes without the reset.
 */
export class Terminal<D extends TerminalData = string> {
  /** The daemon's session id. */
  readonly session: string;
  /** The program's pid (in the daemon's pid namespace). */
  readonly pid: number;
  /** Attached read-only. */
  readonly readonly: boolean;
  #client: PtyClient;
  /** The size this client asks for (sent on attach). */
  #wanted: { cols: number; rows: number } | undefined;
  #cols: number;
  #rows: number;
  #process: string;
  #encoding: string | null;
  #data = new Emitter<[D]>();
  #binary = new Emitter<[Uint8Array]>();
  #exit = new Emitter<[ExitEvent]>();
  #snapshot = new Emitter<[SnapshotEvent]>();
  #error = new Emitter<[Error]>();
  #decoder: InstanceType<typeof TextDecoder> | undefined;
  #ended = false;
  #exitEvent: ExitEvent | undefined;
  #stream: AsyncIterableIterator<AttachEvent> | undefined;
  #reconnected: (() => void) | undefined;
  #offReconnect: () => void;
  #snapshots = 0;
  #resetFirst: boolean;
  #paused = false;
  #held: AttachEvent[] = [];
  #resumed: (() => void) | undefined;
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
      /** The session's size as last known (when this client sends none). */
      sessionCols?: number;
      sessionRows?: number;
      process?: string;
      encoding?: string | null;
      reattach?: boolean;
      fresh?: boolean;
      /** The program could not start: print this the node-pty way and exit with 1. */
      failed?: string;
    },
  ) {
    this.#client = client;
    this.session = init.session;
    this.pid = init.pid;
    this.readonly = init.readonly ?? false;
    if (init.cols !== undefined && init.rows !== undefined) {
      this.#wanted = { cols: init.cols, rows: init.rows };
    }
    this.#cols = init.cols ?? init.sessionCols ?? 80;
    this.#rows = init.rows ?? init.sessionRows ?? 24;
    this.#process = init.process ?? "";
    this.#encoding = init.encoding === undefined ? "utf8" : init.encoding;
    this.#resetFirst = !init.fresh;
    if (init.failed !== undefined) {
      this.#offReconnect = () => {};
      this.#loop = this.#fail(init.failed);
      return;
    }
    this.#offReconnect = init.reattach === false ? () => {} : client.onReconnect(() => {
      const r = this.#reconnected;
      this.#reconnected = undefined;
      r?.();
    });
    this.#loop = this.#run(init.reattach !== false);
  }

  /** The session's width as this client knows it (its own, or the last snapshot's). */
  get cols(): number {
    return this.#cols;
  }
  /** The session's height as this client knows it. */
  get rows(): number {
    return this.#rows;
  }

  /**
   * The terminal's foreground process: argv[0] of its foreground process group (as
   * node-pty's `process`), kept up to date by the daemon while attached.
   */
  get process(): string {
    return this.#process;
  }

  /** Output as text (or bytes with `encoding: null`), split characters held back. */
  onData(cb: (data: D) => void): Disposable {
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

  /**
   * node-pty's older event API: `on("data", (data) => ...)` and
   * `on("exit", (exitCode, signal) => ...)` with the signal as a number (0 when none).
   */
  on(event: "data", listener: (data: D) => void): void;
  /** node-pty's `on("exit")`: the exit code and the signal's number (0 when none). */
  on(event: "exit", listener: (exitCode: number, signal?: number) => void): void;
  on(
    event: "data" | "exit",
    listener: ((data: D) => void) | ((exitCode: number, signal?: number) => void),
  ): void {
    if (event === "data") {
      this.onData(listener as (data: D) => void);
    } else if (event === "exit") {
      const cb = listener as (exitCode: number, signal?: number) => void;
      this.onExit((e) => cb(e.exitCode, e.signalNumber ?? 0));
    } else {
      throw new TypeError(`Unknown terminal event ${JSON.stringify(event)}`);
    }
  }

  /** Resolves when the terminal has ended (exit, detach or error). */
  get closed(): Promise<void> {
    return this.#loop;
  }

  /** True while {@linkcode pause} holds output back. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Types into the session. */
  write(data: string | Uint8Array): void {
    if (this.readonly) throw new Error(`Cannot write to session "${this.session}": read-only`);
    if (this.#ended) return;
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.#client.send({ type: "pty.input", session: this.session, data: bytes });
  }

  /** Sets this client's size; the session takes it (latest active client wins). */
  resize(cols: number, rows: number): void {
    if (this.readonly) throw new Error(`Cannot resize session "${this.session}": read-only`);
    this.#wanted = { cols, rows };
    this.#cols = cols;
    this.#rows = rows;
    if (this.#ended) return;
    this.#client.send({ type: "pty.resize", session: this.session, cols, rows });
  }

  /**
   * Stops output (node-pty's flow control). The daemon holds this client's output, up to
   * 4 MiB; past that it drops it and sends a fresh snapshot on {@linkcode resume}, as it
   * does for a slow client. The program and other clients never wait. The exit is held
   * too, so it still comes after the last output.
   */
  pause(): void {
    if (this.#paused || this.#ended) return;
    this.#paused = true;
    this.#client.send({ type: "pty.pause", session: this.session });
  }

  /** Delivers what was held and goes on. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (!this.#ended || this.#held.length > 0) {
      this.#client.send({ type: "pty.resume", session: this.session });
    }
    const held = this.#held;
    this.#held = [];
    for (const ev of held) this.#onEvent(ev);
    const r = this.#resumed;
    this.#resumed = undefined;
    r?.();
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
    this.resume();
    await this.#loop;
  }

  #emitBytes(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#binary.emit(bytes);
    if (this.#data.size === 0) return;
    if (this.#encoding === null) {
      this.#data.emit(asBuffer(bytes) as D);
      return;
    }
    this.#decoder ??= new TextDecoder(this.#encoding);
    const text = this.#decoder.decode(bytes, { stream: true });
    if (text.length > 0) this.#data.emit(text as D);
  }

  #onEvent(ev: AttachEvent): void {
    if (this.#paused && HELD.has(ev.event)) {
      this.#held.push(ev);
      return;
    }
    switch (ev.event) {
      case "pty.snapshot": {
        const { data, cols, rows } = ev;
        if (cols > 0 && rows > 0) {
          this.#cols = cols;
          this.#rows = rows;
        }
        this.#decoder = undefined;
        this.#snapshot.emit({ data, cols, rows });
        if (this.#snapshots++ > 0 || this.#resetFirst) this.#emitBytes(RESET);
        this.#emitBytes(data);
        break;
      }
      case "pty.output":
        this.#emitBytes(ev.data);
        break;
      case "pty.process":
        this.#process = ev.process;
        break;
      case "pty.exit": {
        this.#ended = true;
        const signal = ev.signal ?? undefined;
        const code = ev.code ?? 0;
        const e: ExitEvent = { exitCode: code };
        if (signal !== undefined) {
          e.signal = signal;
          const n = signalNumber(signal);
          if (n !== undefined) e.signalNumber = n;
        }
        if (ev.reason !== undefined) e.reason = ev.reason;
        this.#exitEvent = e;
        this.#exit.emit(e);
        break;
      }
      case "pty.detached":
        this.#ended = true;
        break;
    }
  }

  async #fail(message: string): Promise<void> {
    this.#ended = true;
    // Listeners are added after spawn() returns: deliver on a later turn, as node-pty does.
    await delay(0);
    this.#emitBytes(new TextEncoder().encode(`execvp(3) failed.: ${message}\r\n`));
    this.#exitEvent = { exitCode: 1 };
    this.#exit.emit(this.#exitEvent);
  }

  async #run(reattach: boolean): Promise<void> {
    try {
      while (!this.#ended) {
        try {
          this.#stream = this.#client.stream({
            type: "pty.attach",
            session: this.session,
            readonly: this.readonly || undefined,
            cols: this.#wanted?.cols,
            rows: this.#wanted?.rows,
          });
          if (this.#paused) this.#client.send({ type: "pty.pause", session: this.session });
          let sawEnd = false;
          for await (const ev of this.#stream) {
            if (isEnd(ev)) sawEnd = true;
            this.#onEvent(ev);
          }
          if (sawEnd) break; // the exit may be held (paused): delivered on resume
          if (!this.#ended) throw new ConnectionClosedError("The attach stream ended");
        } catch (e) {
          if (this.#ended) break;
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
      // Held output (and the exit) are delivered on resume, before `closed` resolves.
      if (this.#held.length > 0) await new Promise<void>((r) => this.#resumed = r);
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
export function spawn(
  client: PtyClient,
  file: string,
  args?: string[],
  options?: SpawnOptions & { encoding?: string },
): Promise<Terminal<string>>;
/** {@linkcode spawn} with `encoding: null`: output as bytes. */
export function spawn(
  client: PtyClient,
  file: string,
  args: string[],
  options: SpawnOptions & { encoding: null },
): Promise<Terminal<Uint8Array>>;
export async function spawn(
  client: PtyClient,
  file: string,
  args: string[] = [],
  options: SpawnOptions = {},
): Promise<Terminal<string> | Terminal<Uint8Array>> {
  const { name, cols, rows, cwd, env } = options;
  let reply: ReplyOf<"pty.spawn">;
  try {
    reply = await client.request({
      type: "pty.spawn",
      argv: [file, ...args],
      name,
      cols,
      rows,
      cwd,
      env,
    });
  } catch (e) {
    if (!(e instanceof SpawnError) || options.spawnError !== "exit") throw e;
    return new Terminal<string>(client, { session: "", pid: -1, process: file, failed: e.message });
  }
  return new Terminal<string>(client, {
    session: reply.session,
    pid: reply.pid,
    cols: options.cols ?? 80,
    rows: options.rows ?? 24,
    process: file,
    encoding: options.encoding,
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
export function attach(
  client: PtyClient,
  session: string,
  options?: AttachOptions & { encoding?: string },
): Promise<Terminal<string>>;
/** {@linkcode attach} with `encoding: null`: output as bytes. */
export function attach(
  client: PtyClient,
  session: string,
  options: AttachOptions & { encoding: null },
): Promise<Terminal<Uint8Array>>;
export async function attach(
  client: PtyClient,
  session: string,
  options: AttachOptions = {},
): Promise<Terminal<string> | Terminal<Uint8Array>> {
  const { sessions } = await client.request({ type: "pty.list" });
  const found = sessions.find((s) => s.session === session) ??
    (sessions.filter((s) => s.name === session).length === 1
      ? sessions.find((s) => s.name === session)
      : undefined);
  return new Terminal<string>(client, {
    session: found?.session ?? session, // unknown: the attach itself reports E_NOT_FOUND
    pid: found?.pid ?? 0,
    readonly: options.readonly,
    cols: options.cols,
    rows: options.rows,
    sessionCols: found?.cols,
    sessionRows: found?.rows,
    process: found?.process,
    encoding: options.encoding,
    reattach: options.reattach,
    fresh: options.reset === false,
  });
}
