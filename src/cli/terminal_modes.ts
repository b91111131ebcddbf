/**
 * What a session changed in the outer terminal, so that `umad attach` undoes exactly that
 * when it leaves ({@linkcode ModeTracker}). Pure: it reads the bytes on their way to the
 * terminal and writes nothing itself.
 *
 * @module
 */

/** DEC private modes whose set state is undone with the reset (`CSI ? n l`). */
const SET_IS_CHANGE = new Set([
  1, // application cursor keys
  5, // reverse video
  6, // origin
  9, // X10 mouse
  45, // reverse wraparound
  66, // application keypad (DECNKM)
  1000, // mouse: buttons
  1001, // mouse: highlight
  1002, // mouse: drag
  1003, // mouse: any motion
  1004, // focus events
  1005, // mouse: UTF-8 encoding
  1006, // mouse: SGR encoding
  1007, // alternate scroll
  1015, // mouse: urxvt encoding
  1016, // mouse: SGR pixels
  2004, // bracketed paste
]);
/** DEC private modes on by default: their reset is the change (`CSI ? n h` undoes it). */
const RESET_IS_CHANGE = new Set([
  7, // autowrap
  25, // cursor visible
]);
/** Alternate screen modes, undone by their own reset. */
const ALT_SCREENS = [1049, 1047, 47];

const ESC = 0x1b;

type ScanState = "text" | "esc" | "csi" | "osc" | "oscEsc" | "skip" | "skipEsc";

/**
 * Follows the modes a program sets through escape sequences (DEC private modes, keypad,
 * insert mode, scroll region, cursor style, kitty keyboard flags, the alternate screen,
 * colors, the window title) and gives back the sequence that undoes only those still
 * changed. A terminal reset (`ESC c`) clears the record: the terminal is back to its
 * defaults. Sequences split across chunks are followed.
 *
 * @example
 * ```ts
 * import { ModeTracker } from "./terminal_modes.ts";
 * const t = new ModeTracker();
 * t.scan(new TextEncoder().encode("\x1b[?1049h\x1b[?25lhello"));
 * console.log(JSON.stringify(t.restore())); // "\u001b[?25h\u001b[?1049l"
 * ```
 */
export class ModeTracker {
  #dec = new Map<number, boolean>();
  #alt: number | undefined;
  #keypad = false;
  #insert = false;
  #region = false;
  #cursorStyle = false;
  #kitty = 0;
  #sgr = false;
  #title = false;
  #state: ScanState = "text";
  #params = "";
  #oscNum = "";
  #oscDigits = true;

  /** True once the program set the window title: the caller saves the old title first. */
  get titleSet(): boolean {
    return this.#title;
  }

  /**
   * Reads output bound for the terminal; returns true when it sets the window title for
   * the first time (so the caller can push the terminal's own title before writing it).
   */
  scan(bytes: Uint8Array): boolean {
    const hadTitle = this.#title;
    for (let i = 0; i < bytes.length; i++) this.#byte(bytes[i]);
    return !hadTitle && this.#title;
  }

  #byte(c: number): void {
    switch (this.#state) {
      case "text":
        if (c === ESC) this.#state = "esc";
        return;
      case "esc":
        this.#state = "text";
        if (c === 0x5b) { // [
          this.#state = "csi";
          this.#params = "";
        } else if (c === 0x5d) { // ]
          this.#state = "osc";
          this.#oscNum = "";
          this.#oscDigits = true;
        } else if (c === 0x50 || c === 0x5f || c === 0x5e || c === 0x58) {
          this.#state = "skip"; // DCS, APC, PM, SOS: to ST
        } else if (c === 0x3d) this.#keypad = true; // ESC =
        else if (c === 0x3e) this.#keypad = false; // ESC >
        else if (c === 0x63) this.#reset(); // ESC c
        return;
      case "csi":
        if (c >= 0x40 && c <= 0x7e) {
          this.#csi(this.#params, String.fromCharCode(c));
          this.#state = "text";
        } else if (c === ESC) {
          this.#state = "esc";
        } else if (this.#params.length < 64) {
          this.#params += String.fromCharCode(c);
        }
        return;
      case "osc":
        if (c === 0x07) {
          this.#state = "text";
        } else if (c === ESC) {
          this.#state = "oscEsc";
        } else if (this.#oscDigits) {
          if (c >= 0x30 && c <= 0x39) this.#oscNum += String.fromCharCode(c);
          else {
            this.#oscDigits = false;
            if (c === 0x3b && (this.#oscNum === "0" || this.#oscNum === "2")) this.#title = true;
          }
        }
        return;
      case "oscEsc":
        this.#state = c === 0x5c ? "text" : "osc";
        return;
      case "skip":
        if (c === ESC) this.#state = "skipEsc";
        else if (c === 0x07 || c === 0x9c) this.#state = "text";
        return;
      case "skipEsc":
        this.#state = c === 0x5c ? "text" : "skip";
        return;
    }
  }

  #csi(params: string, final: string): void {
    if (params.startsWith("?") && (final === "h" || final === "l")) {
      const on = final === "h";
      for (const p of params.slice(1).split(";")) {
        const n = Number(p);
        if (ALT_SCREENS.includes(n)) this.#alt = on ? n : undefined;
        else if (SET_IS_CHANGE.has(n) || RESET_IS_CHANGE.has(n)) this.#dec.set(n, on);
      }
    } else if (params === "4" && (final === "h" || final === "l")) {
      this.#insert = final === "h";
    } else if (final === "r" && !/[?>=<]/.test(params)) {
      this.#region = params !== "" && !/^1?;?$/.test(params);
    } else if (final === "q" && params.endsWith(" ")) {
      this.#cursorStyle = params !== " " && params !== "0 ";
    } else if (final === "u" && params.startsWith(">")) {
      this.#kitty++;
    } else if (final === "u" && params.startsWith("<")) {
      this.#kitty = Math.max(0, this.#kitty - Math.max(1, Number(params.slice(1)) || 1));
    } else if (final === "u" && params.startsWith("=")) {
      if (this.#kitty === 0 && !/^=0(;|$)/.test(params)) this.#kitty = 1;
    } else if (final === "m" && !/[?>=<]/.test(params)) {
      // Attributes are applied in order: what the last one leaves is what counts here.
      const last = params.split(";").at(-1);
      this.#sgr = last !== "" && last !== "0";
    }
  }

  #reset(): void {
    this.#dec.clear();
    this.#alt = undefined;
    this.#keypad =
      this.#insert =
      this.#region =
      this.#cursorStyle =
      this.#sgr =
        false;
    this.#kitty = 0;
  }

  /**
   * The sequence that undoes what is still changed: modes put back to their defaults,
   * kitty flags popped, the scroll region reset with the cursor kept, the alternate
   * screen left (only if the program entered it), the title popped (when
   * {@linkcode titleSet}: the caller pushed the old one with `CSI 22;0 t`). Empty when
   * nothing was changed.
   */
  restore(): string {
    let out = "";
    if (this.#sgr) out += "\x1b[0m";
    for (const [n, on] of this.#dec) {
      if (SET_IS_CHANGE.has(n) && on) out += `\x1b[?${n}l`;
      if (RESET_IS_CHANGE.has(n) && !on) out += `\x1b[?${n}h`;
    }
    if (this.#keypad) out += "\x1b>";
    if (this.#insert) out += "\x1b[4l";
    if (this.#cursorStyle) out += "\x1b[0 q";
    if (this.#kitty > 0) out += `\x1b[<${this.#kitty}u`;
    // DECSTBM homes the cursor: save and restore it around the reset.
    if (this.#region) out += "\x1b7\x1b[r\x1b8";
    if (this.#alt !== undefined) out += `\x1b[?${this.#alt}l`;
    if (this.#title) out += "\x1b[23;0t";
    return out;
  }
}

/** Pushes the terminal's title on its stack (XTWINOPS), so that a session's title can be undone. */
export const SAVE_TITLE = "\x1b[22;0t";
