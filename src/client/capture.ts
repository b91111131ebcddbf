/**
 * Reading a terminal session as a program does with tmux's `capture-pane` and a wait for
 * output: {@linkcode capture} and {@linkcode waitFor}. Runtime-neutral.
 *
 * @module
 */
import type { PtyClient } from "./terminal.ts";

/** Options of {@linkcode capture}. */
export interface CaptureOptions {
  /** `"text"` (default: plain text, trailing blanks trimmed) or `"ansi"` (colors kept). */
  format?: "text" | "ansi";
  /** First line: 0 is the screen's top row, negative lines are scrollback (default 0). */
  start?: number;
  /** Last line, inclusive (default the screen's bottom row). */
  end?: number;
}

/** What {@linkcode capture} returns. */
export interface CaptureResult {
  /** The lines, each ending in `\n`. */
  data: string;
  /** The screen's width, columns. */
  cols: number;
  /** The screen's height, rows. */
  rows: number;
  /** The cursor on the screen, 0-based. */
  cursor: { x: number; y: number };
}

/**
 * The screen (and scrollback lines) of a session, as text or ANSI.
 *
 * @example
 * ```ts ignore
 * const { data } = await capture(client, "build", { start: -100 }); // last 100 lines + screen
 * ```
 */
export async function capture(
  client: PtyClient,
  session: string,
  options: CaptureOptions = {},
): Promise<CaptureResult> {
  const { format, start, end } = options;
  const r = await client.request({ type: "pty.capture", session, format, start, end });
  return { data: r.data, cols: r.cols, rows: r.rows, cursor: r.cursor };
}

/** Options of {@linkcode waitFor}. */
export interface WaitOptions {
  /** Treat the pattern as a JavaScript regular expression (flag `m`). */
  regex?: boolean;
  /** Give up after this long, ms (default 30 s). */
  timeoutMs?: number;
}

/** What {@linkcode waitFor} returns. */
export interface WaitResult {
  /** True when the pattern matched; false at the timeout or when the program exited. */
  matched: boolean;
  /** The matched text. */
  text?: string;
}

/**
 * Resolves when the session's screen, or output it produces from now on, matches
 * `pattern` (or at the timeout, or when the program exits, with `matched: false`).
 *
 * @example
 * ```ts ignore
 * const r = await waitFor(client, "db", "ready to accept connections", { timeoutMs: 10_000 });
 * if (!r.matched) throw new Error("the database did not start");
 * ```
 */
export async function waitFor(
  client: PtyClient,
  session: string,
  pattern: string | RegExp,
  options: WaitOptions = {},
): Promise<WaitResult> {
  const regex = pattern instanceof RegExp || options.regex === true;
  const r = await client.request({
    type: "pty.wait",
    session,
    pattern: pattern instanceof RegExp ? pattern.source : pattern,
    regex,
    timeout_ms: options.timeoutMs ?? 30_000,
  });
  return r.text === undefined ? { matched: r.matched } : { matched: r.matched, text: r.text };
}
