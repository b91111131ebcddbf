import type { Capture } from "./screen.ts";

/** Bytes xterm keeps per cell of a buffer line (3 × u32), for the scrollback cap. */
export const BYTES_PER_CELL = 12;

/** Requests to the emulator worker. */
export type EmulatorRequest =
  | {
    op: "open";
    sid: string;
    cols: number;
    rows: number;
    scrollback: number;
    scrollbackBytes: number;
  }
  | { op: "write"; sid: string; data: Uint8Array }
  | { op: "resize"; sid: string; cols: number; rows: number }
  | { op: "snapshot"; sid: string; req: number }
  | {
    op: "capture";
    sid: string;
    req: number;
    format: "text" | "ansi";
    start?: number;
    end?: number;
  }
  | { op: "wait"; sid: string; wid: number; pattern: string; regex: boolean }
  | { op: "unwait"; sid: string; wid: number }
  | { op: "barrier"; sid: string; req: number }
  | { op: "close"; sid: string };

/** Replies from the emulator worker. */
export type EmulatorReply =
  | { op: "ack"; sid: string; bytes: number; lines: number }
  | { op: "snapshot"; req: number; data: Uint8Array; cols: number; rows: number }
  | ({ op: "capture"; req: number } & Capture)
  | { op: "waited"; wid: number; matched: boolean; text?: string }
  | { op: "title"; sid: string; title: string }
  | { op: "barrier"; req: number };

/** What a session hears from its screen besides snapshots. */
export interface ScreenListener {
  /** Bytes parsed, and the lines the buffer holds now. */
  onAck(bytes: number, lines: number): void;
  /** A program set the window title. */
  onTitle(title: string): void;
}

export type { Capture };

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
  #captures = new Map<number, (c: Capture) => void>();
  #barriers = new Map<number, () => void>();
  #waits = new Map<number, (r: { matched: boolean; text?: string }) => void>();
  #listeners = new Map<string, ScreenListener>();
  #log: (level: "error", msg: string) => void;

  constructor(log: (level: "error", msg: string) => void = () => {}) {
    this.#log = log;
  }

  /** True once the worker failed; writes then count as parsed at once. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Broken or terminated: requests are answered empty at once. */
  get #dead(): boolean {
    return this.#broken || this.#terminated;
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
    this.#settleAll();
  }

  /** Answers everything pending as a broken worker would: empty, unmatched. */
  #settleAll(): void {
    for (const [, p] of this.#snapshots) {
      p.resolve({ data: new Uint8Array(0), cols: p.cols, rows: p.rows });
    }
    this.#snapshots.clear();
    for (const [, r] of this.#captures) r({ data: "", cols: 0, rows: 0, cursor: { x: 0, y: 0 } });
    this.#captures.clear();
    for (const [, r] of this.#barriers) r();
    this.#barriers.clear();
    for (const [, r] of this.#waits) r({ matched: false });
    this.#waits.clear();
  }

  #onReply(m: EmulatorReply): void {
    switch (m.op) {
      case "ack":
        this.#listeners.get(m.sid)?.onAck(m.bytes, m.lines);
        break;
      case "snapshot": {
        const p = this.#snapshots.get(m.req);
        this.#snapshots.delete(m.req);
        p?.resolve({ data: m.data, cols: m.cols, rows: m.rows });
        break;
      }
      case "capture": {
        const r = this.#captures.get(m.req);
        this.#captures.delete(m.req);
        r?.({ data: m.data, cols: m.cols, rows: m.rows, cursor: m.cursor });
        break;
      }
      case "waited": {
        const r = this.#waits.get(m.wid);
        this.#waits.delete(m.wid);
        r?.({ matched: m.matched, text: m.text });
        break;
      }
      case "title":
        this.#listeners.get(m.sid)?.onTitle(m.title);
        break;
      case "barrier": {
        const r = this.#barriers.get(m.req);
        this.#barriers.delete(m.req);
        r?.();
        break;
      }
    }
  }

  /** Creates the screen of session `sid`; `listener` hears acks and titles. */
  open(
    sid: string,
    size: { cols: number; rows: number; scrollback: number; scrollbackBytes: number },
    listener: ScreenListener,
  ): void {
    this.#listeners.set(sid, listener);
    this.#post({ op: "open", sid, ...size });
  }

  /** Feeds output; acked asynchronously (at once when the worker is broken). */
  write(sid: string, data: Uint8Array): void {
    if (this.#broken) {
      this.#listeners.get(sid)?.onAck(data.length, 0);
      return;
    }
    this.#post({ op: "write", sid, data });
  }

  resize(sid: string, cols: number, rows: number): void {
    this.#post({ op: "resize", sid, cols, rows });
  }

  /** The screen after every byte written so far. */
  snapshot(sid: string, cols: number, rows: number): Promise<Snapshot> {
    if (this.#dead) return Promise.resolve({ data: new Uint8Array(0), cols, rows });
    const req = this.#nextReq++;
    return new Promise((resolve) => {
      this.#snapshots.set(req, { resolve, cols, rows });
      this.#post({ op: "snapshot", sid, req });
    });
  }

  /** Lines `start`..`end` of the screen as text or ANSI, after every byte written so far. */
  capture(
    sid: string,
    format: "text" | "ansi",
    start?: number,
    end?: number,
  ): Promise<Capture> {
    if (this.#dead) {
      return Promise.resolve({ data: "", cols: 0, rows: 0, cursor: { x: 0, y: 0 } });
    }
    const req = this.#nextReq++;
    return new Promise((resolve) => {
      this.#captures.set(req, resolve);
      this.#post({ op: "capture", sid, req, format, start, end });
    });
  }

  /**
   * Resolves when the screen (now, or after later output) matches `pattern`, or with
   * `matched: false` if {@linkcode unwait} or the worker's end comes first.
   */
  wait(
    sid: string,
    wid: number,
    pattern: string,
    regex: boolean,
  ): Promise<{ matched: boolean; text?: string }> {
    if (this.#dead) return Promise.resolve({ matched: false });
    return new Promise((resolve) => {
      this.#waits.set(wid, resolve);
      this.#post({ op: "wait", sid, wid, pattern, regex });
    });
  }

  /** Stops a wait; its promise resolves unmatched. */
  unwait(sid: string, wid: number): void {
    const r = this.#waits.get(wid);
    this.#waits.delete(wid);
    this.#post({ op: "unwait", sid, wid });
    r?.({ matched: false });
  }

  /** Resolves once everything written to `sid` so far has been parsed (and waits checked). */
  barrier(sid: string): Promise<void> {
    if (this.#dead) return Promise.resolve();
    const req = this.#nextReq++;
    return new Promise((resolve) => {
      this.#barriers.set(req, resolve);
      this.#post({ op: "barrier", sid, req });
    });
  }

  close(sid: string): void {
    this.#listeners.delete(sid);
    this.#post({ op: "close", sid });
  }

  /** Stops the worker; everything pending resolves empty or unmatched. */
  terminate(): void {
    this.#terminated = true;
    this.#worker?.terminate();
    this.#worker = undefined;
    this.#settleAll();
    this.#listeners.clear();
  }
}
