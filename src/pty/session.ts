import { concat } from "../protocol/bytes.ts";
import { UmadError } from "../protocol/mod.ts";
import type { ExitReason } from "../protocol/events.ts";
import type { Stream } from "../protocol/service.ts";
import type { Capture, Emulator } from "./emulator.ts";
import type { ExitStatus, PtyProcess } from "./pty_process.ts";

/** The emulator may lag the relay by this much before the program is paused. */
const EMULATOR_HIGH_WATER = 8 * 1024 * 1024;
/** ...and reading resumes below this. */
const EMULATOR_LOW_WATER = 2 * 1024 * 1024;
/** Output for the emulator is batched: posted after this delay, or at once past the size. */
const EMULATOR_BATCH_MS = 10;
const EMULATOR_BATCH_BYTES = 64 * 1024;
/** Output held for a client while its snapshot is being made; past this it gets another. */
const SYNC_PENDING_CAP = 4 * 1024 * 1024;
/** Output held for a paused client; past this it gets a snapshot when it resumes. */
const PAUSED_PENDING_CAP = 4 * 1024 * 1024;
/**
 * Output kept raw for the first client of a new session (node-pty's spawn gives every byte
 * from the start): up to this much, for this long after the spawn; later, a snapshot.
 */
const EARLY_CAP = 1024 * 1024;
const EARLY_MS = 5000;
/** The foreground process is looked at this long after output or input (once per burst). */
const PROCESS_CHECK_MS = 25;

/** Counters shared by all sessions of a service. */
export interface PtyCounters {
  bytesRead: number;
  bytesRelayed: number;
  droppedBacklogs: number;
  snapshots: number;
  emulatorPauses: number;
}

type AttachState = "syncing" | "live" | "lagging" | "closed";

/** One `pty.attach` request: a client watching (and maybe driving) a session. */
export class Attachment {
  readonly stream: Stream;
  readonly readonly: boolean;
  cols: number | undefined;
  rows: number | undefined;
  /** Activity stamp; the highest non-readonly one decides the size. */
  active = 0;
  state: AttachState = "syncing";
  pending: Uint8Array[] = [];
  pendingBytes = 0;
  overflow = false;
  /** The client asked for no output (`pty.pause`): output waits in `pending`, bounded. */
  paused = false;

  constructor(stream: Stream, readonly: boolean, cols?: number, rows?: number) {
    this.stream = stream;
    this.readonly = readonly;
    this.cols = cols;
    this.rows = rows;
  }
}

let activityClock = 0;

const NO_BYTES = new Uint8Array(0);

/**
 * The bytes at the end of the output that begin a UTF-8 character not yet complete. The
 * emulator holds them unprinted, so a snapshot taken now lacks them: they are sent right
 * after it, or the character's last bytes would reach the client alone.
 */
export function incompleteUtf8(prev: Uint8Array, chunk: Uint8Array): Uint8Array {
  const joined = chunk.length >= 3 ? chunk.subarray(chunk.length - 3) : concat([prev, chunk]);
  const len = joined.length;
  for (let i = len - 1; i >= Math.max(0, len - 3); i--) {
    const b = joined[i];
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back
    if (b < 0xc0) return NO_BYTES; // ASCII (or a stray continuation): complete
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    return len - i < need ? joined.slice(i) : NO_BYTES;
  }
  return NO_BYTES;
}

/**
 * A PTY session: its program, its terminal state and the clients attached to it.
 *
 * Output is relayed to live clients the moment it is read, then fed to the emulator.
 * A client attaching (or recovering from a dropped backlog) asks the emulator for a
 * snapshot; output read after the request is held for it and sent right after the
 * snapshot, so it sees every byte exactly once. A client whose connection is over its
 * cap is skipped (its backlog dropped) until it drains, then resynced with a snapshot.
 */
export class Session {
  readonly id: string;
  readonly name: string;
  readonly created: number;
  readonly proc: PtyProcess;
  readonly attachments: Set<Attachment> = new Set();
  /** Bytes read from the program. */
  offset = 0;
  /** Bytes the emulator has parsed. */
  parsed = 0;
  status: ExitStatus | undefined;
  /** Remove the session as soon as its exit is reported (it was killed). */
  removeOnExit = false;
  /** What `pty.exit` gives as its reason: set before the daemon ends the program. */
  exitReason: ExitReason = "exited";
  /** Called when the session is done and should be forgotten. */
  onGone: () => void = () => {};
  /** Called once, when the program has exited and its output was relayed. */
  onExited: () => void = () => {};
  /** Called when the session's size changes. */
  onResized: () => void = () => {};
  /** Called when the program sets the window title. */
  onTitle: () => void = () => {};
  /** The window title the program set last ("" until it sets one). */
  title = "";
  /** Lines the emulator holds (scrollback + screen), as of its last ack. */
  lines = 0;
  /** The foreground process's name (argv[0] of the terminal's foreground group). */
  process: string;

  #emulator: Emulator;
  #counters: PtyCounters;
  #cols: number;
  #rows: number;
  #paused = false;
  #emuBatch: Uint8Array[] = [];
  #emuBatchBytes = 0;
  #emuTimer: ReturnType<typeof setTimeout> | undefined;
  #processTimer: ReturnType<typeof setTimeout> | undefined;
  #exitListeners = new Set<() => void>();
  /** The output's unfinished UTF-8 character, if it ends in one. */
  #utf8Tail: Uint8Array = NO_BYTES;
  /** Output since the spawn, raw, for the first attachment (undefined once it is spent). */
  #early: Uint8Array[] | undefined = [];
  #earlyBytes = 0;
  #earlyTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    init: {
      id: string;
      name: string;
      proc: PtyProcess;
      scrollback: number;
      scrollbackBytes: number;
      program: string;
    },
    emulator: Emulator,
    counters: PtyCounters,
  ) {
    this.id = init.id;
    this.name = init.name;
    this.proc = init.proc;
    this.process = init.program;
    this.created = Date.now();
    this.#emulator = emulator;
    this.#counters = counters;
    this.#cols = init.proc.cols;
    this.#rows = init.proc.rows;
    emulator.open(this.id, {
      cols: this.#cols,
      rows: this.#rows,
      scrollback: init.scrollback,
      scrollbackBytes: init.scrollbackBytes,
    }, {
      onAck: (n, lines) => {
        if (lines > 0) this.lines = lines;
        this.#onParsed(n);
      },
      onTitle: (title) => {
        this.title = title;
        this.onTitle();
      },
    });
    this.proc.onData = (chunk) => this.#onData(chunk);
    this.proc.onExit = (status) => this.#onExit(status);
    this.#earlyTimer = setTimeout(() => this.#dropEarly(), EARLY_MS);
  }

  #dropEarly(): void {
    clearTimeout(this.#earlyTimer);
    this.#earlyTimer = undefined;
    this.#early = undefined;
    this.#earlyBytes = 0;
  }

  get cols(): number {
    return this.#cols;
  }
  get rows(): number {
    return this.#rows;
  }
  get exited(): boolean {
    return this.status !== undefined;
  }

  /** Adds a client; it gets a snapshot, then live output, then the exit. */
  attach(att: Attachment): void {
    if (att.stream.signal.aborted) {
      att.stream.end();
      return;
    }
    this.attachments.add(att);
    att.stream.signal.addEventListener("abort", () => {
      // Shutdown is not a detach: the service ends every attachment with pty.exit.
      const reason = att.stream.signal.reason;
      if (reason !== "shutdown") this.detach(att, reason === "disconnected");
    }, { once: true });
    if (!att.readonly && att.cols !== undefined && att.rows !== undefined) this.#touch(att);
    const early = this.#early;
    if (early !== undefined) {
      // The first client of a new session: an empty screen, then every byte since spawn.
      this.#dropEarly();
      att.stream.send("pty.snapshot", {
        session: this.id,
        data: NO_BYTES,
        cols: this.proc.cols,
        rows: this.proc.rows,
      });
      this.#counters.snapshots++;
      if (early.length > 0) {
        const data = concat(early);
        att.stream.send("pty.output", { session: this.id, data });
        this.#counters.bytesRelayed += data.length;
      }
      att.state = "live";
      if (this.exited) this.#sendExit(att);
      return;
    }
    this.#resync(att);
  }

  /** Removes a client; `silent` when its connection is gone. */
  detach(att: Attachment, silent = false): void {
    if (att.state === "closed") return;
    att.state = "closed";
    att.pending = [];
    this.attachments.delete(att);
    if (!silent) att.stream.send("pty.detached", { session: this.id });
    att.stream.end();
    this.#sizeAfterLeave(att);
    if (this.exited && this.removeOnExit && this.attachments.size === 0) this.onGone();
  }

  /** The attachments of one connection. */
  attachmentsOf(connectionId: number): Attachment[] {
    return [...this.attachments].filter((a) => a.stream.connectionId === connectionId);
  }

  /** Input from a connection: refused for read-only clients and when the queue is full. */
  input(connectionId: number, data: Uint8Array): void {
    const mine = this.#writer(connectionId, "write to");
    if (this.exited) return; // typed into a closing session: nobody reads it
    if (mine !== undefined) this.#touch(mine);
    if (!this.proc.write(data)) {
      throw new UmadError(
        "E_BUSY",
        `Cannot write to session "${this.id}": the program is not reading its input`,
      );
    }
    this.#scheduleProcessCheck();
  }

  /**
   * Pauses (or resumes) output to this connection's attachments. While paused, output
   * waits for the client, up to 4 MiB; past that it is dropped and the client gets a
   * fresh snapshot when it resumes, as a slow client does. The exit waits too.
   */
  setPaused(connectionId: number, paused: boolean): void {
    for (const att of this.attachmentsOf(connectionId)) {
      if (att.paused === paused) continue;
      att.paused = paused;
      if (paused || att.state !== "live") continue;
      if (att.overflow) {
        this.#resync(att);
        continue;
      }
      this.#sendPending(att);
      if (this.exited) this.#sendExit(att);
    }
  }

  /** The screen (and scrollback lines) as text or ANSI, after all output read so far. */
  capture(format: "text" | "ansi", start?: number, end?: number): Promise<Capture> {
    this.#flushEmulator();
    return this.#emulator.capture(this.id, format, start, end);
  }

  /** Resolves when everything read so far has been parsed by the emulator. */
  parsedAll(): Promise<void> {
    this.#flushEmulator();
    return this.#emulator.barrier(this.id);
  }

  /** Flushes batched output so that a wait or capture sees it at once. */
  flushToEmulator(): void {
    this.#flushEmulator();
  }

  /** A client's size; it becomes the session's size (latest active client wins). */
  resize(connectionId: number, cols: number, rows: number): void {
    const mine = this.#writer(connectionId, "resize");
    if (mine === undefined) {
      this.#applySize(cols, rows);
      return;
    }
    for (const a of this.attachmentsOf(connectionId)) {
      if (!a.readonly) {
        a.cols = cols;
        a.rows = rows;
      }
    }
    this.#touch(mine);
  }

  /** Calls `fn` once the program has exited and its output was relayed. */
  onExit(fn: () => void): void {
    this.#exitListeners.add(fn);
  }
  /** Undoes {@linkcode onExit}. */
  offExit(fn: () => void): void {
    this.#exitListeners.delete(fn);
  }

  /** Ends every attachment (with the exit when known) and frees the terminal state. */
  dispose(): void {
    for (const att of [...this.attachments]) {
      if (this.status !== undefined) this.#sendExit(att);
      else this.detach(att, true);
    }
    clearTimeout(this.#emuTimer);
    this.#emuTimer = undefined;
    clearTimeout(this.#processTimer);
    this.#processTimer = undefined;
    this.#dropEarly();
    this.#emuBatch = [];
    this.#emulator.close(this.id);
  }

  #writer(connectionId: number, verb: string): Attachment | undefined {
    const mine = this.attachmentsOf(connectionId);
    if (mine.length === 0) return undefined;
    const writers = mine.filter((a) => !a.readonly);
    if (writers.length === 0) {
      throw new UmadError(
        "E_PROTO_BAD_REQUEST",
        `Cannot ${verb} session "${this.id}": this client is attached read-only`,
      );
    }
    return writers.reduce((a, b) => (b.active > a.active ? b : a));
  }

  #touch(att: Attachment): void {
    att.active = ++activityClock;
    if (att.cols !== undefined && att.rows !== undefined) this.#applySize(att.cols, att.rows);
  }

  #sizeAfterLeave(att: Attachment): void {
    if (att.readonly || this.exited) return;
    let best: Attachment | undefined;
    for (const a of this.attachments) {
      if (a.readonly || a.cols === undefined) continue;
      if (best === undefined || a.active > best.active) best = a;
    }
    if (best !== undefined && best.active < att.active) {
      this.#applySize(best.cols!, best.rows!);
    }
  }

  #applySize(cols: number, rows: number): void {
    if (this.exited || (cols === this.#cols && rows === this.#rows)) return;
    this.proc.resize(cols, rows);
    this.#flushEmulator();
    this.#emulator.resize(this.id, cols, rows);
    this.#cols = cols;
    this.#rows = rows;
    this.onResized();
  }

  /** Looks at the foreground process shortly after output or input (a command starting). */
  #scheduleProcessCheck(): void {
    if (this.#processTimer !== undefined || this.exited || this.attachments.size === 0) return;
    this.#processTimer = setTimeout(() => {
      this.#processTimer = undefined;
      const name = this.proc.foreground();
      if (name === undefined || name === this.process) return;
      this.process = name;
      for (const att of this.attachments) {
        if (att.state !== "closed") {
          att.stream.send("pty.process", { session: this.id, process: name });
        }
      }
    }, PROCESS_CHECK_MS);
  }

  #onData(chunk: Uint8Array): void {
    const n = chunk.length;
    this.#utf8Tail = incompleteUtf8(this.#utf8Tail, chunk);
    if (this.#early !== undefined) {
      if (this.#earlyBytes + n > EARLY_CAP) {
        this.#dropEarly();
      } else {
        this.#early.push(chunk);
        this.#earlyBytes += n;
      }
    }
    this.offset += n;
    this.#counters.bytesRead += n;
    for (const att of this.attachments) {
      if (att.paused && att.state === "live") {
        if (att.overflow) continue;
        if (att.pendingBytes + n > PAUSED_PENDING_CAP) {
          att.overflow = true;
          att.pending = [];
          att.pendingBytes = 0;
          this.#counters.droppedBacklogs++;
        } else {
          att.pending.push(chunk);
          att.pendingBytes += n;
        }
      } else if (att.state === "live") {
        if (!att.stream.writable) {
          this.#lag(att);
        } else {
          att.stream.send("pty.output", { session: this.id, data: chunk });
          this.#counters.bytesRelayed += n;
        }
      } else if (att.state === "syncing" && !att.overflow) {
        if (att.pendingBytes + n > SYNC_PENDING_CAP) {
          att.overflow = true;
          att.pending = [];
          att.pendingBytes = 0;
        } else {
          att.pending.push(chunk);
          att.pendingBytes += n;
        }
      }
    }
    this.#feedEmulator(chunk);
    this.#scheduleProcessCheck();
    if (!this.#paused && this.offset - this.parsed > EMULATOR_HIGH_WATER) {
      this.#paused = true;
      this.#counters.emulatorPauses++;
      this.proc.pause();
    }
  }

  /**
   * Feeds the emulator in batches: interactive output (a keystroke's echo) costs the
   * Worker one wake-up per 10 ms instead of one per chunk, and that wake-up comes after
   * the echo was relayed, not during the next one.
   */
  #feedEmulator(chunk: Uint8Array): void {
    this.#emuBatch.push(chunk);
    this.#emuBatchBytes += chunk.length;
    if (this.#emuBatchBytes >= EMULATOR_BATCH_BYTES) {
      this.#flushEmulator();
    } else {
      this.#emuTimer ??= setTimeout(() => {
        this.#emuTimer = undefined;
        this.#flushEmulator();
      }, EMULATOR_BATCH_MS);
    }
  }

  /** Posts batched output; called before anything whose order matters (snapshot, resize). */
  #flushEmulator(): void {
    if (this.#emuTimer !== undefined) {
      clearTimeout(this.#emuTimer);
      this.#emuTimer = undefined;
    }
    if (this.#emuBatchBytes === 0) return;
    const data = concat(this.#emuBatch, this.#emuBatchBytes);
    this.#emuBatch = [];
    this.#emuBatchBytes = 0;
    this.#emulator.write(this.id, data);
  }

  #onParsed(n: number): void {
    this.parsed += n;
    if (this.#paused && this.offset - this.parsed < EMULATOR_LOW_WATER) {
      this.#paused = false;
      this.proc.resume();
    }
  }

  #lag(att: Attachment): void {
    att.state = "lagging";
    att.pending = [];
    att.pendingBytes = 0;
    this.#counters.droppedBacklogs++;
    att.stream.ready().then(() => {
      if (att.state === "lagging") this.#resync(att);
    });
  }

  async #resync(att: Attachment): Promise<void> {
    att.state = "syncing";
    att.pending = [];
    att.pendingBytes = 0;
    att.overflow = false;
    this.#flushEmulator();
    const tail = this.#utf8Tail;
    const snap = await this.#emulator.snapshot(this.id, this.#cols, this.#rows);
    if (att.state !== "syncing") return;
    if (att.overflow) {
      if (att.stream.writable) this.#resync(att);
      else this.#lag(att);
      return;
    }
    att.stream.send("pty.snapshot", {
      session: this.id,
      data: snap.data,
      cols: snap.cols || this.#cols,
      rows: snap.rows || this.#rows,
    });
    this.#counters.snapshots++;
    if (tail.length > 0) {
      att.pending.unshift(tail);
      att.pendingBytes += tail.length;
    }
    this.#sendPending(att);
    att.state = "live";
    if (this.exited && !att.paused) this.#sendExit(att);
  }

  /** Sends what was held for the attachment (paused, or syncing) in one output event. */
  #sendPending(att: Attachment): void {
    if (att.pendingBytes > 0) {
      const data = concat(att.pending, att.pendingBytes);
      att.stream.send("pty.output", { session: this.id, data });
      this.#counters.bytesRelayed += data.length;
    }
    att.pending = [];
    att.pendingBytes = 0;
  }

  #sendExit(att: Attachment): void {
    if (att.state === "closed") return;
    att.state = "closed";
    this.attachments.delete(att);
    att.stream.send("pty.exit", {
      session: this.id,
      code: this.status?.code ?? null,
      signal: this.status?.signal ?? null,
      reason: this.exitReason,
    });
    att.stream.end();
    if (this.removeOnExit && this.attachments.size === 0) this.onGone();
  }

  #onExit(status: ExitStatus): void {
    this.status = status;
    if (this.#paused) this.#paused = false;
    for (const att of [...this.attachments]) {
      if (att.state === "live" && !att.paused) this.#sendExit(att); // paused: on resume
    }
    clearTimeout(this.#processTimer);
    this.#processTimer = undefined;
    this.onExited();
    for (const fn of [...this.#exitListeners]) fn();
    this.#exitListeners.clear();
    if (this.removeOnExit && this.attachments.size === 0) this.onGone();
  }
}
