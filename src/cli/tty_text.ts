/**
 * Text from elsewhere (model output, session names) made safe for a terminal: control
 * characters are shown as escapes instead of being obeyed, so a model or a session
 * name cannot move the cursor, retitle the window, or write to the clipboard.
 *
 * @module
 */

// C0 controls, DEL and C1 controls (U+0080..U+009F: some terminals obey U+009B as CSI).
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g;
// A lone CR stays too: it can only overwrite the line, and tokens may split a CRLF.
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROLS_BUT_LINES = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g;

function escape(c: string): string {
  const code = c.charCodeAt(0);
  switch (c) {
    case "\n":
      return "\\n";
    case "\t":
      return "\\t";
    case "\r":
      return "\\r";
  }
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`;
}

/**
 * `text` with every control character written as an escape (`ESC` → `\x1b`, newline →
 * `\n`): for one-line fields such as a session name in a table.
 *
 * @example
 * ```ts
 * import { escapeControls } from "./tty_text.ts";
 * console.log(escapeControls("a\x1b]0;pwned\x07b")); // a\x1b]0;pwned\x07b (as visible text)
 * ```
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROLS, escape);
}

/**
 * `text` with control characters escaped except line breaks and tabs (`\n`, `\r`,
 * `\t`): for running text such as model output, which keeps its lines.
 *
 * @example
 * ```ts
 * import { escapeControlsKeepLines } from "./tty_text.ts";
 * console.log(escapeControlsKeepLines("one\n\x1b[2Jtwo")); // "one\n\\x1b[2Jtwo"
 * ```
 */
export function escapeControlsKeepLines(text: string): string {
  return text.replace(CONTROLS_BUT_LINES, escape);
}
