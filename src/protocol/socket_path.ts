/**
 * The socket path by PROTOCOL.md's rules: an explicit path, else `$UMAD_SOCKET`, else
 * `$XDG_RUNTIME_DIR/umad/umad.sock`, else `/tmp/umad-<uid>/umad.sock`. Pure: callers
 * pass their runtime's environment and uid.
 *
 * @example
 * ```ts
 * const path = socketPathFor(undefined, { XDG_RUNTIME_DIR: "/run/user/1000" }, 1000);
 * console.log(path); // "/run/user/1000/umad/umad.sock"
 * ```
 */
export function socketPathFor(
  explicit: string | undefined,
  env: Record<string, string | undefined>,
  uid: number,
): string {
  if (explicit) return explicit;
  if (env.UMAD_SOCKET) return env.UMAD_SOCKET;
  if (env.XDG_RUNTIME_DIR) return `${env.XDG_RUNTIME_DIR.replace(/\/+$/, "")}/umad/umad.sock`;
  return `/tmp/umad-${uid}/umad.sock`;
}
