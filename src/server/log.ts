/** Log levels, most verbose first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
/** One of {@linkcode LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];
/** Writes one log line at a level. */
export type Logger = (level: Exclude<LogLevel, "silent">, message: string) => void;

const encoder = new TextEncoder();

/**
 * A logger that writes `time level message` lines to stderr, dropping lines below
 * `threshold`.
 *
 * @example
 * ```ts
 * const log = createLogger("warn");
 * log("info", "not shown");
 * ```
 */
export function createLogger(threshold: LogLevel): Logger {
  const min = LOG_LEVELS.indexOf(threshold);
  return (level, message) => {
    if (LOG_LEVELS.indexOf(level) < min) return;
    const line = `${new Date().toISOString()} ${level.padEnd(5)} ${message}\n`;
    try {
      Deno.stderr.writeSync(encoder.encode(line));
    } catch {
      // stderr closed: nothing useful to do.
    }
  };
}
