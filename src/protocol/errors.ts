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
  "E_INTERNAL",
] as const;

/** One of the protocol's error codes. */
export type ErrorCode = typeof ERROR_CODES[number];

/**
 * An error that becomes an `error {id, code, message}` event on the wire.
 *
 * @example
 * ```ts
 * const err = new ProtocolError("E_NOT_FOUND", 'Cannot attach session "a1": not found');
 * console.log(err.code); // "E_NOT_FOUND"
 * ```
 */
export class ProtocolError extends Error {
  /** The wire code. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/**
 * Framing errors close the connection after the error frame is sent; every other
 * error (an undecodable payload included: frame boundaries are still intact) only
 * fails its request.
 */
export function isFramingError(code: ErrorCode): boolean {
  return code === "E_PROTO_INVALID_LEN" || code === "E_PROTO_FRAME_TOO_LARGE";
}
