/**
 * The `umad attach` / `umad run` relay: this terminal ↔ one session, as one synchronous
 * loop that sleeps in `poll` on stdin and its own connection to the daemon (tmux's client
 * works the same way). A key goes from the kernel to this loop to the socket with no
 * thread-pool or event-loop hop in between, and so does its echo on the way back — Deno's
 * own stdin reads run on a separate thread, which cost a hop each way.
 *
 * The loop blocks the event loop for as long as the session is attached: nothing else
 * runs in this process meanwhile (the window size is looked at on each wake-up and every
 * 100 ms instead of through a SIGWINCH listener).
 *
 * @module
 */
import { decodePayload, encodeMessageFrame, type Message } from "../protocol/codec.ts";
import { errorFromEvent } from "../protocol/errors.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { ConnectionClosedError } from "../protocol/errors.ts";
import type { ExitReason } from "../protocol/events.ts";
import { decodeBase64 } from "../protocol/base64.ts";
import { FdPoll, readFd, UnixSocket } from "../pty/unix_socket.ts";
import { type ModeTracker, SAVE_TITLE } from "./terminal_modes.ts";

/** How an attached session ended. */
export type AttachEnd =
  | { kind: "detached" }
  | { kind: "exit"; exitCode: number; signal?: string; reason: ExitReason }
  | { kind: "error"; error: Error };

/** The detach key: Ctrl-\ (FS, 0x1c), as in dtach. */
export const DETACH_KEY = 0x1c;

/** Resets a terminal before a snapshot redraws it (RIS). */
const RESET = new Uint8Array([0x1b, 0x63]);
const ATTACH_ID = "a";
const SIZE_CHECK_MS = 100;

/** What {@linkcode relay} needs. */
export interface RelayOptions {
  socketPath: string;
  session: string;
  readonly: boolean;
  /** A session just spawned: its first snapshot is empty, the screen is not reset. */
  fresh: boolean;
  /** Read keys from stdin (false: watch only, e.g. stdin is not readable). */
  keys: boolean;
  /** This terminal's size, or undefined (not a terminal, or read-only). */
  size: () => { cols: number; rows: number } | undefined;
  /** Writes to this terminal (all of it, synchronously). */
  write: (bytes: Uint8Array) => void;
  /** Records what the session changes in this terminal, to undo it at the end. */
  modes: ModeTracker;
}

/**
 * The relay's hot frames without the general MessagePack codec: a keystroke's
 * `pty.input` frame is its fixed part, encoded once, plus the key's bytes; an echo's
 * `pty.output` payload laid out exactly as the last one the codec decoded gives its bytes
 * without a decode. Anything else goes through the codec. Per key nothing is allocated
 * but views: less work for the garbage collector, and less code for V8 to compile while a
 * fresh `umad run` gets its first keys.
 *
 * @example
 * ```ts
 * import { decodePayload } from "../protocol/codec.ts";
 * import { RelayFrames } from "./relay.ts";
 * const f = new RelayFrames("s1", "a");
 * const frame = f.input(new Uint8Array([104]))!;
 * console.log(decodePayload(frame.subarray(4)).message.type); // "pty.input"
 * ```
 */
export class RelayFrames {
  /** The input frame's MessagePack bytes before the data's bin header. */
  #inputHead: Uint8Array | null = null;
  #inputBuf = new Uint8Array(0);
  /** An output payload's bytes before the data's bin header, once one was seen. */
  #outputHead: Uint8Array | null = null;

  /** Frames for `session`'s input; output events carrying the attach id `id`. */
  constructor(session: string, readonly id: string) {
    const probe = encodeMessageFrame(
      { type: "pty.input", session, data: new Uint8Array(0) },
      "msgpack",
    );
    // The codec writes `data` last, as bin 8 (0xc4, length): that is the part that varies.
    if (probe.at(-2) === 0xc4 && probe.at(-1) === 0) {
      this.#inputHead = probe.slice(4, -2);
      this.#inputBuf = new Uint8Array(4 + this.#inputHead.length + 2 + 255);
      this.#inputBuf.set(this.#inputHead, 4);
    }
  }

  /** The `pty.input` frame for `data` (a view, valid until the next call); null past 255 bytes. */
  input(data: Uint8Array): Uint8Array | null {
    const head = this.#inputHead;
    if (head === null || data.length > 255) return null;
    const buf = this.#inputBuf;
    const len = head.length + 2 + data.length;
    buf[0] = len & 0xff;
    buf[1] = len >>> 8;
    buf[2] = 0;
    buf[3] = 0;
    buf[4 + head.length] = 0xc4;
    buf[5 + head.length] = data.length;
    buf.set(data, 6 + head.length);
    return buf.subarray(0, 4 + len);
  }

  /**
   * The codec decoded `payload` as `event`: when it is this attachment's output and the
   * codec writes it back byte for byte, later outputs of the same layout take the fast path.
   */
  learn(payload: Uint8Array, event: Message): void {
    if (this.#outputHead !== null || event.event !== "pty.output" || event.id !== this.id) return;
    if (!(event.data instanceof Uint8Array) || event.data.length > 255) return;
    const again = encodeMessageFrame(event, "msgpack").subarray(4);
    if (again.length !== payload.length || !again.every((b, i) => b === payload[i])) return;
    this.#outputHead = payload.slice(0, payload.length - event.data.length - 2);
  }

  /**
   * Runs the per-key paths a few thousand times on made-up frames, so V8 has compiled
   * them before the first key rather than while the user types.
   */
  static warmUp(id: string): void {
    const f = new RelayFrames("warm-up", id);
    const key = new Uint8Array([97]);
    const echo = encodeMessageFrame(
      { event: "pty.output", id, session: "warm-up", data: key },
      "msgpack",
    ).subarray(4);
    f.learn(echo, decodePayload(echo).message);
    for (let i = 0; i < 5000; i++) {
      f.input(key);
      f.output(echo);
    }
  }

  /** The data of an output payload laid out as the learned one (a view), or null. */
  output(payload: Uint8Array): Uint8Array | null {
    const head = this.#outputHead;
    if (head === null) return null;
    const h = head.length;
    if (
      payload.length < h + 2 || payload[h] !== 0xc4 || payload[h + 1] !== payload.length - h - 2
    ) {
      return null;
    }
    for (let i = 0; i < h; i++) if (payload[i] !== head[i]) return null;
    return payload.subarray(h + 2);
  }
}

function toBytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  return typeof v === "string" ? decodeBase64(v) : new Uint8Array(0);
}

/**
 * Relays until the session exits, the user detaches (Ctrl-\), stdin of a terminal
 * closes (a detach), or the connection drops. Synchronous: returns when it is over, with
 * the session's id (`opts.session` may be a name).
 */
export function relay(opts: RelayOptions): { end: AttachEnd; session: string } {
  let session = opts.session;
  const end = relayUntilEnd(opts, (id) => session = id);
  return { end, session };
}

function relayUntilEnd(opts: RelayOptions, onId: (id: string) => void): AttachEnd {
  const sock = UnixSocket.connect(opts.socketPath);
  const send = (m: Message) => sock.write(encodeMessageFrame(m, "msgpack"));
  const frames = new RelayFrames(opts.session, ATTACH_ID);
  const withKeys = new FdPoll([sock.fd, 0]);
  const netOnly = new FdPoll([sock.fd]);
  RelayFrames.warmUp(ATTACH_ID);
  const decoder = new FrameDecoder(64 << 20);
  const buf = new Uint8Array(256 * 1024);
  const keyBuf = new Uint8Array(16 * 1024);
  let size = opts.readonly ? undefined : opts.size();
  let snapshots = 0;
  let detaching = false;
  let stdinOpen = opts.keys;
  let lastSizeCheck = performance.now();
  const write = (bytes: Uint8Array) => {
    if (bytes.length === 0) return;
    if (opts.modes.scan(bytes)) opts.write(new TextEncoder().encode(SAVE_TITLE));
    opts.write(bytes);
  };
  try {
    const attach: Message = { type: "pty.attach", id: ATTACH_ID, session: opts.session };
    if (opts.readonly) attach.readonly = true;
    if (size !== undefined) {
      attach.cols = size.cols;
      attach.rows = size.rows;
    }
    if (!send(attach)) return lost();
    while (true) {
      const ready = (stdinOpen ? withKeys : netOnly).wait(SIZE_CHECK_MS);
      if (ready & (FdPoll.readable(0) | FdPoll.closed(0))) {
        const n = readFd(sock.fd, buf);
        if (n === 0) return lost();
        // An echo: one whole frame in one read, laid out as the last one.
        const fast = n > 4 && decoder.buffered === 0 &&
            (buf[0] | (buf[1] << 8) | (buf[2] << 16) | (buf[3] << 24)) === n - 4
          ? frames.output(buf.subarray(4, n))
          : null;
        if (fast !== null) {
          write(fast);
        } else if (n > 0) {
          for (const payload of decoder.push(buf.subarray(0, n))) {
            const ev = decodePayload(payload).message;
            frames.learn(payload, ev);
            if (ev.id !== ATTACH_ID && ev.event !== "error") continue;
            if (typeof ev.session === "string") onId(ev.session);
            switch (ev.event) {
              case "pty.snapshot":
                if (snapshots++ > 0 || !opts.fresh) write(RESET);
                write(toBytes(ev.data));
                break;
              case "pty.output":
                write(toBytes(ev.data));
                break;
              case "pty.exit":
                return {
                  kind: "exit",
                  exitCode: typeof ev.code === "number" ? ev.code : 0,
                  ...(typeof ev.signal === "string" ? { signal: ev.signal } : {}),
                  reason: (ev.reason as ExitReason | undefined) ?? "exited",
                };
              case "pty.detached":
                return { kind: "detached" };
              case "error":
                if (ev.id === ATTACH_ID || ev.id === null) {
                  return { kind: "error", error: errorFromEvent(ev) };
                }
                break;
            }
          }
        }
      }
      if (stdinOpen && ready & (FdPoll.readable(1) | FdPoll.closed(1))) {
        const n = readFd(0, keyBuf);
        if (n === 0) {
          stdinOpen = false;
          // A terminal that closes is the user leaving; piped input ending is not.
          if (Deno.stdin.isTerminal()) detaching = detach(send, opts.session, detaching);
        } else if (n > 0) {
          const chunk = keyBuf.subarray(0, n);
          const k = chunk.indexOf(DETACH_KEY);
          const typed = k >= 0 ? chunk.subarray(0, k) : chunk;
          if (!opts.readonly && typed.length > 0 && !detaching) {
            const frame = frames.input(typed);
            const sent = frame !== null
              ? sock.write(frame)
              : send({ type: "pty.input", session: opts.session, data: typed });
            if (!sent) return lost();
          }
          if (k >= 0) detaching = detach(send, opts.session, detaching);
        }
      }
      const now = performance.now();
      if (!opts.readonly && !detaching && now - lastSizeCheck >= SIZE_CHECK_MS) {
        lastSizeCheck = now;
        const s = opts.size();
        if (s !== undefined && (s.cols !== size?.cols || s.rows !== size?.rows)) {
          size = s;
          send({ type: "pty.resize", session: opts.session, cols: s.cols, rows: s.rows });
        }
      }
    }
  } finally {
    sock.close();
  }
}

/** Asks the daemon to detach this connection (once); the attach stream then ends. */
function detach(send: (m: Message) => boolean, session: string, already: boolean): boolean {
  if (!already) send({ type: "pty.detach", id: "d", session });
  return true;
}

function lost(): AttachEnd {
  return {
    kind: "error",
    error: new ConnectionClosedError("The connection to the daemon was lost"),
  };
}
