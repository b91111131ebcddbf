/** Requests to the emulator worker. */
export type EmulatorRequest =
  | { op: "open"; sid: string; cols: number; rows: number; scrollback: number }
  | { op: "write"; sid: string; data: Uint8Array }
  | { op: "resize"; sid: string; cols: number; rows: number }
  | { op: "snapshot"; sid: string; req: number }
  | { op: "close"; sid: string };

/** Replies from the emulator worker. */
export type EmulatorReply =
  | { op: "ack"; sid: string; bytes: number }
  | { op: "snapshot"; req: number; data: Uint8Array; cols: number; rows: number };

/** A serialized screen (with scrollback), as terminal output that redraws it. */
export interface Snapshot {
  data: Uint8Array;
  cols: number;
  rows: number;
}

/**
 * The terminal state of every session: `@xterm/headless` screens in one Worker, so that
 * parsing (7–20 MB/s) never sits on the output relay. Requests are ordered, so a
 * snapshot reflects exactly the bytes written before it was asked for. The worker acks
 * parsed bytes; sessions use the acks for flow control (xterm throws past 50 MB
 * pending).
 *
 * If the worker cannot start (a compiled binary without it, say), snapshots come back
 * empty and every write counts as parsed: sessions keep relaying.
 */
export class Emulator {
  #worker: Worker | undefined;
  #broken = false;
  #terminated = false;
  #nextReq = 1;
  #snapshots = new Map<number, { resolve: (s: Snapshot) => void; cols: number; rows: number }>();
  #acks = new Map<string, (bytes: number) => void>();
  #log: (level: "error", msg: string) => void;

  constructor(log: (level: "error", msg: string) => void = () => {}) {
    this.#log = log;
  }

  /** True once the worker failed; writes then count as parsed at once. */
  get broken(): boolean {
    return this.#broken;
  }

  #post(m: EmulatorRequest): void {
    if (this.#broken || this.#terminated) return;
    if (this.#worker === undefined) {
      try {
        this.#worker = new Worker(new URL("./emulator_worker.ts", import.meta.url), {
          type: "module",
        });
        this.#worker.onmessage = (e: MessageEvent<EmulatorReply>) => this.#onReply(e.data);
        this.#worker.onerror = (e: ErrorEvent) => {
          e.preventDefault();
          this.#fail(e.message);
        };
      } catch (e) {
        this.#fail((e as Error).message);
        return;
      }
    }
    this.#worker.postMessage(m);
  }

  #fail(why: string): void {
    if (this.#broken) return;
    this.#broken = true;
    this.#log("error", `terminal emulator worker failed (${why}); snapshots will be empty`);
    this.#worker?.terminate();
    this.#worker = undefined;
    for (const [, p] of this.#snapshots) {
      p.resolve({ data: new Uint8Array(0), cols: p.cols, rows: p.rows });
    }
    this.#snapshots.clear();
  }

  #onReply(m: EmulatorReply): void {
    if (m.op === "ack") {
      this.#acks.get(m.sid)?.(m.bytes);
    } else {
      const p = this.#snapshots.get(m.req);
      this.#snapshots.delete(m.req);
      p?.resolve({ data: m.data, cols: m.cols, rows: m.rows });
    }
  }

  /** Creates the screen of session `sid`; `onAck` receives parsed byte counts. */
  open(
    sid: string,
    cols: number,
    rows: number,
    scrollback: number,
    onAck: (bytes: number) => void,
  ): void {
    this.#acks.set(sid, onAck);
    this.#post({ op: "open", sid, cols, rows, scrollback });
  }

  /** Feeds output; acked asynchronously (at once when the worker is broken). */
  write(sid: string, data: Uint8Array): void {
    if (this.#broken) {
      this.#acks.get(sid)?.(data.length);
      return;
    }
    this.#post({ op: "write", sid, data });
  }

  resize(sid: string, cols: number, rows: number): void {
    this.#post({ op: "resize", sid, cols, rows });
  }

  /** The screen after every byte written so far. */
  snapshot(sid: string, cols: number, rows: number): Promise<Snapshot> {
    if (this.#broken) return Promise.resolve({ data: new Uint8Array(0), cols, rows });
    const req = this.#nextReq++;
    return new Promise((resolve) => {
      this.#snapshots.set(req, { resolve, cols, rows });
      this.#post({ op: "snapshot", sid, req });
    });
  }

  close(sid: string): void {
    this.#acks.delete(sid);
    this.#post({ op: "close", sid });
  }

  /** Stops the worker; pending snapshots resolve empty. */
  terminate(): void {
    this.#terminated = true;
    this.#worker?.terminate();
    this.#worker = undefined;
    for (const [, p] of this.#snapshots) {
      p.resolve({ data: new Uint8Array(0), cols: p.cols, rows: p.rows });
    }
    this.#snapshots.clear();
    this.#acks.clear();
  }
}
