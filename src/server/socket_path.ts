import { dirname } from "node:path";
import { ConfigError } from "../protocol/errors.ts";
import { socketPathFor } from "../protocol/socket_path.ts";

/**
 * The daemon's socket path: `--socket`, else the environment's (see
 * {@linkcode socketPathFor}).
 *
 * @example
 * ```ts
 * console.log(resolveSocketPath("/tmp/x/umad.sock")); // "/tmp/x/umad.sock"
 * ```
 */
export function resolveSocketPath(flag?: string): string {
  return socketPathFor(flag, Deno.env.toObject(), Deno.uid() ?? 0);
}

/**
 * Makes sure the socket's directory exists with mode 0700 and belongs to us; refuses
 * (throws {@linkcode ConfigError}) a directory that grants group/other access or has
 * another owner, as tmux does.
 */
export function prepareSocketDir(socketPath: string): string {
  const dir = dirname(socketPath);
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    Deno.mkdirSync(dirname(dir), { recursive: true });
    try {
      Deno.mkdirSync(dir, { mode: 0o700 });
    } catch (e2) {
      if (!(e2 instanceof Deno.errors.AlreadyExists)) throw e2;
    }
    Deno.chmodSync(dir, 0o700);
    info = Deno.statSync(dir);
  }
  if (!info.isDirectory) throw new ConfigError(`Socket directory "${dir}" is not a directory`);
  const uid = Deno.uid();
  if (uid !== null && info.uid !== uid) {
    throw new ConfigError(
      `Socket directory "${dir}" belongs to uid ${info.uid}, not to us (uid ${uid}): refusing to use it`,
    );
  }
  const mode = (info.mode ?? 0) & 0o777;
  if (mode & 0o077) {
    throw new ConfigError(
      `Socket directory "${dir}" has mode ${
        mode.toString(8).padStart(4, "0")
      }: it must not grant group or other access (chmod 700 it)`,
    );
  }
  return dir;
}
