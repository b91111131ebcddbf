/**
 * One error tree for daemon, client and CLI: {@linkcode UmadError} carries a typed
 * `code` and keeps its `cause`; a subclass exists for each condition callers act on.
 * On the wire an error is `error {id, code, message}` (PROTOCOL.md, "Errors").
 *
 * @module
 */

/** The error codes of the wire contract (PROTOCOL.md, "Errors"). */
export const ERROR_CODES = [
  "E_PROTO_INVALID_LEN",
  "E_PROTO_FRAME_TOO_LARGE",
  "E_PROTO_INVALID_JSON",
  "E_PROTO_BAD_REQUEST",
  "E_LIMIT_PROMPT_TOO_LARGE",
  "E_BUSY",
  "E_RATE_LIMITED",
  "E_NO_MODEL",
  "E_NOT_FOUND",
  "E_SPAWN",
  "E_IDLE_TIMEOUT",
  "E_INTERNAL",
] as const;

/** One of the protocol's error codes. */
export type ErrorCode = typeof ERROR_CODES[number];

/**
 * The codes UMA Serve's daemon answers its own request form with (a map with `prompt`
 * and no `type`; PROTOCOL.md, "UMA Serve compatibility").
 */
export const UMA_ERROR_CODES = ["E_LIMIT_001", "E_PROTO_001", "E_RUNTIME_DECODE"] as const;

/** One of UMA Serve's codes. */
export type UmaErrorCode = typeof UMA_ERROR_CODES[number];

/**
 * Codes of conditions that never travel on the wire: the client's connection closed or
 * timed out, a socket that fails the safety rules, a bad configuration or command line.
 */
export const LOCAL_ERROR_CODES = [
  "E_CLOSED",
  "E_TIMEOUT",
  "E_UNSAFE_SOCKET",
  "E_CONFIG",
  "E_USAGE",
] as const;

/** One of {@linkcode LOCAL_ERROR_CODES}. */
export type LocalErrorCode = typeof LOCAL_ERROR_CODES[number];

/** Every code an {@linkcode UmadError} may carry. */
export type UmadErrorCode = ErrorCode | UmaErrorCode | LocalErrorCode;

/**
 * The root of umad's errors. `code` says what happened; the wire codes are the ones a
 * daemon sends as `error {id, code, message}`.
 *
 * @example
 * ```ts
 * import { UmadError } from "./errors.ts";
 * const err = new UmadError("E_NOT_FOUND", 'Cannot attach session "a1": not found');
 * console.log(err.code, err instanceof Error); // E_NOT_FOUND true
 * ```
 */
export class UmadError extends Error {
  /** What failed, as a code callers can switch on. */
  readonly code: UmadErrorCode;
  /** An error with `code`; `options.cause` is kept. */
  constructor(code: UmadErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UmadError";
    this.code = code;
  }
}

/** `E_PROTO_*`: the request (or frame) was malformed. */
export class BadRequestError extends UmadError {
  /** A malformed request; `code` is one of the `E_PROTO_*` codes. */
  constructor(
    code: ErrorCode | UmaErrorCode = "E_PROTO_BAD_REQUEST",
    message: string,
    options?: ErrorOptions,
  ) {
    super(code, message, options);
    this.name = "BadRequestError";
  }
}

/** `E_BUSY`: too many clients, requests, sessions or queued generations; retry later. */
export class BusyError extends UmadError {
  /** The daemon is full. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_BUSY", message, options);
    this.name = "BusyError";
  }
}

/** `E_RATE_LIMITED`: the connection sent requests too fast. */
export class RateLimitedError extends UmadError {
  /** Over the connection's request rate. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_RATE_LIMITED", message, options);
    this.name = "RateLimitedError";
  }
}

/** `E_NOT_FOUND`: unknown session, or cancel of an unknown id. */
export class NotFoundError extends UmadError {
  /** Nothing by that name or id. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_NOT_FOUND", message, options);
    this.name = "NotFoundError";
  }
}

/** `E_NO_MODEL`: the daemon has no model loaded. */
export class NoModelError extends UmadError {
  /** No model to serve the request. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_NO_MODEL", message, options);
    this.name = "NoModelError";
  }
}

/** `E_LIMIT_PROMPT_TOO_LARGE`: the prompt does not fit the context. */
export class PromptTooLargeError extends UmadError {
  /** The prompt is longer than the context allows. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_LIMIT_PROMPT_TOO_LARGE", message, options);
    this.name = "PromptTooLargeError";
  }
}

/** `E_SPAWN`: a terminal's program could not be started; the message says why. */
export class SpawnError extends UmadError {
  /** The program was not found, not executable, the cwd is missing, or argv too long. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_SPAWN", message, options);
    this.name = "SpawnError";
  }
}

/** `E_IDLE_TIMEOUT`: the daemon closed a connection that sent nothing in time. */
export class IdleTimeoutError extends UmadError {
  /** Closed for being idle. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_IDLE_TIMEOUT", message, options);
    this.name = "IdleTimeoutError";
  }
}

/** `E_INTERNAL`: a bug in the daemon; the message says what failed. */
export class InternalError extends UmadError {
  /** Something that should not happen did. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_INTERNAL", message, options);
    this.name = "InternalError";
  }
}

/** The connection closed while the request was in flight (the client may reconnect). */
export class ConnectionClosedError extends UmadError {
  /** The connection is gone. */
  constructor(message = "Connection to umad closed", options?: ErrorOptions) {
    super("E_CLOSED", message, options);
    this.name = "ConnectionClosedError";
  }
}

/** Connecting, or a reply, took longer than allowed. */
export class TimeoutError extends UmadError {
  /** Too slow. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_TIMEOUT", message, options);
    this.name = "TimeoutError";
  }
}

/**
 * A socket path that fails PROTOCOL.md's safety rules (a symlink, another owner, a
 * directory others may write): the client refuses it before sending a byte.
 */
export class UnsafeSocketError extends UmadError {
  /** The path and the rule it breaks are in the message. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_UNSAFE_SOCKET", message, options);
    this.name = "UnsafeSocketError";
  }
}

/** A configuration problem that stops the daemon (or a command) with exit code 2. */
export class ConfigError extends UmadError {
  /** A bad setting, named in the message. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_CONFIG", message, options);
    this.name = "ConfigError";
  }
}

/** A command-line usage problem: the command prints it with its help and exits 2. */
export class UsageError extends UmadError {
  /** A bad flag or argument, named in the message. */
  constructor(message: string, options?: ErrorOptions) {
    super("E_USAGE", message, options);
    this.name = "UsageError";
  }
}

/**
 * The error for a wire code: the subclass callers catch, with `code` kept. The daemon
 * throws these from services; the client builds them from `error` events.
 *
 * @example
 * ```ts
 * import { BusyError, errorFromCode } from "./errors.ts";
 * const err = errorFromCode("E_BUSY", "full");
 * console.log(err instanceof BusyError, err.code); // true E_BUSY
 * ```
 */
export function errorFromCode(
  code: UmadErrorCode,
  message: string,
  options?: ErrorOptions,
): UmadError {
  switch (code) {
    case "E_BUSY":
      return new BusyError(message, options);
    case "E_RATE_LIMITED":
      return new RateLimitedError(message, options);
    case "E_NOT_FOUND":
      return new NotFoundError(message, options);
    case "E_NO_MODEL":
      return new NoModelError(message, options);
    case "E_LIMIT_PROMPT_TOO_LARGE":
    case "E_LIMIT_001":
      return new PromptTooLargeError(message, options);
    case "E_SPAWN":
      return new SpawnError(message, options);
    case "E_IDLE_TIMEOUT":
      return new IdleTimeoutError(message, options);
    case "E_INTERNAL":
      return new InternalError(message, options);
    case "E_PROTO_INVALID_LEN":
    case "E_PROTO_FRAME_TOO_LARGE":
    case "E_PROTO_INVALID_JSON":
    case "E_PROTO_BAD_REQUEST":
    case "E_PROTO_001":
      return new BadRequestError(code, message, options);
    case "E_CLOSED":
      return new ConnectionClosedError(message, options);
    case "E_TIMEOUT":
      return new TimeoutError(message, options);
    case "E_UNSAFE_SOCKET":
      return new UnsafeSocketError(message, options);
    case "E_CONFIG":
      return new ConfigError(message, options);
    case "E_USAGE":
      return new UsageError(message, options);
    default:
      return new UmadError(code, message, options);
  }
}

const KNOWN_CODES: ReadonlySet<string> = new Set([
  ...ERROR_CODES,
  ...UMA_ERROR_CODES,
  ...LOCAL_ERROR_CODES,
]);

/**
 * The error an `error {code, message}` event stands for. A code this version does not
 * know (a newer daemon) becomes `E_INTERNAL` with the original code in the message.
 *
 * @example
 * ```ts
 * import { errorFromEvent, NotFoundError } from "./errors.ts";
 * const err = errorFromEvent({ event: "error", code: "E_NOT_FOUND", message: "gone" });
 * console.log(err instanceof NotFoundError); // true
 * ```
 */
export function errorFromEvent(
  event: { code?: unknown; message?: unknown; [field: string]: unknown },
): UmadError {
  const raw = String(event.code ?? "E_INTERNAL");
  const message = String(event.message ?? raw);
  if (KNOWN_CODES.has(raw)) return errorFromCode(raw as UmadErrorCode, message);
  return new InternalError(`${message} (${raw})`);
}

/**
 * Framing errors close the connection after the error frame is sent; every other
 * error (an undecodable payload included: frame boundaries are still intact) only
 * fails its request.
 *
 * @example
 * ```ts
 * import { isFramingError } from "./errors.ts";
 * console.log(isFramingError("E_PROTO_INVALID_LEN"), isFramingError("E_BUSY")); // true false
 * ```
 */
export function isFramingError(code: UmadErrorCode): boolean {
  return code === "E_PROTO_INVALID_LEN" || code === "E_PROTO_FRAME_TOO_LARGE";
}

/**
 * True for codes that may travel in an `error` event (the contract's and UMA Serve's);
 * local codes (a closed connection, a bad flag) never do.
 *
 * @example
 * ```ts
 * import { isWireCode } from "./errors.ts";
 * console.log(isWireCode("E_BUSY"), isWireCode("E_CONFIG")); // true false
 * ```
 */
export function isWireCode(code: UmadErrorCode): code is ErrorCode | UmaErrorCode {
  return !(LOCAL_ERROR_CODES as readonly string[]).includes(code);
}
