/**
 * How the daemon shares its descriptor limit between connections and terminal
 * sessions, so that it refuses new ones with `E_BUSY` before `accept` or `posix_openpt`
 * fail with EMFILE. Pure: the caller reads the limit and the descriptors in use.
 *
 * @module
 */

/**
 * Descriptors one terminal session costs the daemon: the PTY master it keeps open
 * (measured: 30 sessions add 30 descriptors at rest; the slave is opened only in the
 * child) plus one of room for the transient ones of a spawn or an exit.
 */
export const FDS_PER_SESSION = 2;
/** Descriptors one connection costs: its socket. */
export const FDS_PER_CLIENT = 1;
/** Connections at most by default, however high the limit. */
export const DEFAULT_MAX_CLIENTS = 4096;
/** Terminal sessions at most by default, however high the limit. */
export const DEFAULT_MAX_SESSIONS = 1024;
/** Share of the spare descriptors that default terminal sessions may take. */
const SESSION_SHARE = 0.25;

/** What {@linkcode fdBudget} needs to know. */
export interface FdBudgetInput {
  /** The soft `RLIMIT_NOFILE` in force (after raising it). */
  limit: number;
  /** Descriptors open before any client or session (runtime, model, workers, logs). */
  inUse: number;
  /** `--max-clients`, when given. */
  maxClients?: number;
  /** `--max-sessions`, when given. */
  maxSessions?: number;
}

/** The limits the daemon enforces, and what they leave over. */
export interface FdBudget {
  /** Connections served at once; the next gets `E_BUSY`. */
  maxClients: number;
  /** Terminal sessions running at once; the next `pty.spawn` gets `E_BUSY`. */
  maxSessions: number;
  /** Descriptors kept free for everything else (accepting one to refuse it, files, spawns). */
  reserve: number;
  /**
   * True when given limits exceed the descriptors there are: past that point `accept`
   * or a spawn may fail with EMFILE (the daemon survives it, but refuses less clearly).
   */
  overcommitted: boolean;
}

/**
 * Splits the spare descriptors (limit − in use − reserve) between sessions and clients.
 * The reserve is 32 descriptors or 5% of the limit, whichever is more. By default
 * sessions get a quarter of the spare descriptors and clients the rest, each capped at
 * {@linkcode DEFAULT_MAX_SESSIONS} and {@linkcode DEFAULT_MAX_CLIENTS}; a given limit
 * is kept as it is and the other takes what remains.
 *
 * @example
 * ```ts
 * import { fdBudget } from "./fd_budget.ts";
 * const b = fdBudget({ limit: 128, inUse: 25 });
 * console.log(b.maxSessions, b.maxClients, b.reserve); // 8 55 32
 * ```
 */
export function fdBudget(input: FdBudgetInput): FdBudget {
  const { limit, inUse } = input;
  const reserve = Math.max(32, Math.ceil(limit * 0.05));
  const spare = Math.max(0, limit - inUse - reserve);
  let maxSessions = input.maxSessions ??
    Math.min(DEFAULT_MAX_SESSIONS, Math.floor((spare * SESSION_SHARE) / FDS_PER_SESSION));
  const left = Math.max(0, spare - maxSessions * FDS_PER_SESSION);
  let maxClients = input.maxClients ??
    Math.min(DEFAULT_MAX_CLIENTS, Math.floor(left / FDS_PER_CLIENT));
  if (input.maxSessions === undefined && input.maxClients !== undefined) {
    // Clients were fixed: sessions take what they leave, up to the default cap.
    const after = Math.max(0, spare - maxClients * FDS_PER_CLIENT);
    maxSessions = Math.min(DEFAULT_MAX_SESSIONS, Math.floor(after / FDS_PER_SESSION));
  }
  // Always serve at least one client and allow one session: a tiny limit still works,
  // it just refuses early.
  maxClients = Math.max(1, maxClients);
  maxSessions = Math.max(1, maxSessions);
  const needed = maxClients * FDS_PER_CLIENT + maxSessions * FDS_PER_SESSION;
  return { maxClients, maxSessions, reserve, overcommitted: needed > spare };
}
