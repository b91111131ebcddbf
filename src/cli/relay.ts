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
import { readFd, UnixSocket, waitFds } from "../pty/unix_socket.ts";
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
      const fds = stdinOpen ? [sock.fd, 0] : [sock.fd];
      const [net, keys] = waitFds(fds, SIZE_CHECK_MS);
      if (net.readable || net.closed) {
        const n = readFd(sock.fd, buf);
        if (n === 0) return lost();
        if (n > 0) {
          for (const payload of decoder.push(buf.subarray(0, n))) {
            const ev = decodePayload(payload).message;
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
      if (keys?.readable || keys?.closed) {
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
            if (!send({ type: "pty.input", session: opts.session, data: typed })) return lost();
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
