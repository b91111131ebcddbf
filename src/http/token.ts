/**
 * The bearer token `--http` TCP clients must send: a random secret the daemon keeps in
 * `umad.token`, mode 0600, beside its socket (the loopback port is open to every local
 * user; the file, like the socket, only to this one).
 *
 * @module
 */
import { dirname } from "node:path";
import { ConfigError } from "../protocol/errors.ts";

/** The token file's name, beside the socket. */
export const TOKEN_FILE = "umad.token";

/** Where the token of the daemon on `socketPath` is kept. */
export function tokenPathFor(socketPath: string): string {
  return `${dirname(socketPath)}/${TOKEN_FILE}`;
}

const TOKEN_RE = /^[0-9a-f]{64}$/;

/**
 * The token for the daemon on `socketPath`: the one in its token file when that file
 * is ours, a regular file and readable by us alone; otherwise a new one, written
 * there with mode 0600. A file another user owns, or a symlink, is refused
 * ({@linkcode ConfigError}): in a shared directory such as `/tmp` it could be a trap.
 *
 * @example
 * ```ts ignore
 * const { token, path } = ensureToken("/run/user/1000/umad/umad.sock");
 * ```
 */
export function ensureToken(socketPath: string): { token: string; path: string } {
  const path = tokenPathFor(socketPath);
  let info: Deno.FileInfo | undefined;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (info) {
    const uid = Deno.uid();
    if (!info.isFile || (uid !== null && info.uid !== uid)) {
      throw new ConfigError(
        `Token file "${path}" is not a regular file of ours: refusing to use it (remove it)`,
      );
    }
    if (((info.mode ?? 0) & 0o077) === 0) {
      const existing = Deno.readTextFileSync(path).trim();
      if (TOKEN_RE.test(existing)) return { token: existing, path };
    }
    Deno.removeSync(path);
  }
  const token = [...crypto.getRandomValues(new Uint8Array(32))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const file = Deno.openSync(path, { createNew: true, write: true, mode: 0o600 });
  try {
    file.writeSync(new TextEncoder().encode(token + "\n"));
  } finally {
    file.close();
  }
  Deno.chmodSync(path, 0o600);
  return { token, path };
}
