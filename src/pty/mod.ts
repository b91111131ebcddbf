/**
 * Terminal sessions: a PTY shim over libc (Deno FFI), sessions with several clients,
 * terminal state in `@xterm/headless` for snapshots on attach, and the `pty.*` service.
 *
 * @module
 */
export {
  createPtyService,
  type PtyMetrics,
  type PtyService,
  type PtyServiceOptions,
  userShell,
} from "./service.ts";
export { type ExitStatus, liveChildren, PtyProcess, spawnPty } from "./pty_process.ts";
export { rawOutput } from "./termios.ts";
