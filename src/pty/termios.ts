import { libc } from "./libc.ts";

// struct termios: Linux has 4-byte tcflag_t (c_oflag at 4, 60 bytes in all); macOS has
// 8-byte tcflag_t (c_oflag at 8, 72 bytes). Room for either.
const TERMIOS_BYTES = 128;
const OFLAG_OFFSET = Deno.build.os === "darwin" ? 8 : 4;
const OPOST = 0x1;
const TCSANOW = 0;

/**
 * Turns off output post-processing (OPOST) on a terminal fd and returns a function that
 * restores the terminal's previous settings; undefined when `fd` is not a terminal.
 *
 * `Deno.stdin.setRaw(true)` leaves OPOST on, so every newline a relay writes goes through
 * the line discipline's slow path (about 10× slower here) and ONLCR turns "\r\n" into
 * "\r\r\n". A terminal relay (`umad attach`) wants cfmakeraw's output side too.
 *
 * @example
 * ```ts ignore
 * Deno.stdin.setRaw(true);
 * const restore = rawOutput(1);
 * // ... relay ...
 * restore?.();
 * ```
 */
export function rawOutput(fd: number): (() => void) | undefined {
  const lib = libc();
  const saved = new Uint8Array(TERMIOS_BYTES);
  if (lib.tcgetattr(fd, saved) !== 0) return undefined;
  const raw = saved.slice();
  const view = new DataView(raw.buffer);
  view.setUint32(OFLAG_OFFSET, view.getUint32(OFLAG_OFFSET, true) & ~OPOST, true);
  if (lib.tcsetattr(fd, TCSANOW, raw) !== 0) return undefined;
  return () => {
    const now = new Uint8Array(TERMIOS_BYTES);
    if (lib.tcgetattr(fd, now) !== 0) return;
    // Put back only the output flags: setRaw(false) restores the rest.
    const v = new DataView(now.buffer);
    v.setUint32(OFLAG_OFFSET, new DataView(saved.buffer).getUint32(OFLAG_OFFSET, true), true);
    lib.tcsetattr(fd, TCSANOW, now);
  };
}
