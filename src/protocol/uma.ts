/**
 * UMA Serve's request form (a map with `prompt` and no `type`) is answered with UMA
 * Serve's own error codes (PROTOCOL.md, "UMA Serve compatibility"): `E_LIMIT_001`
 * ("prompt too large"), `E_PROTO_001` ("invalid utf-8"), `E_RUNTIME_DECODE`.
 *
 * @module
 */
import type { Message } from "./codec.ts";
import type { ErrorCode, UmaErrorCode } from "./errors.ts";

/**
 * True for a request in UMA Serve's form.
 *
 * @example
 * ```ts
 * import { isUmaForm } from "./uma.ts";
 * console.log(isUmaForm({ id: "a", prompt: "Hi" }), isUmaForm({ type: "generate", prompt: "Hi" })); // true false
 * ```
 */
export function isUmaForm(message: Message): boolean {
  return message.type === undefined && "prompt" in message;
}

/**
 * The code and message a UMA Serve client gets for an error of a request in its form.
 *
 * @example
 * ```ts
 * import { umaError } from "./uma.ts";
 * console.log(umaError("E_LIMIT_PROMPT_TOO_LARGE", "Prompt has 9000 tokens").code); // E_LIMIT_001
 * ```
 */
export function umaError(
  code: ErrorCode | UmaErrorCode,
  message: string,
): { code: ErrorCode | UmaErrorCode; message: string } {
  switch (code) {
    case "E_LIMIT_PROMPT_TOO_LARGE":
      return { code: "E_LIMIT_001", message: `prompt too large: ${message}` };
    case "E_INTERNAL":
      return { code: "E_RUNTIME_DECODE", message: `decode failed: ${message}` };
    default:
      return { code, message };
  }
}

/**
 * True when a string holds a lone UTF-16 surrogate (a JSON `\ud800` escape): text
 * that has no UTF-8 form.
 *
 * @example
 * ```ts
 * import { hasLoneSurrogate } from "./uma.ts";
 * console.log(hasLoneSurrogate("a\ud800b"), hasLoneSurrogate("😀")); // true false
 * ```
 */
export function hasLoneSurrogate(s: string): boolean {
  return /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
}

/**
 * For a JSON payload that is not valid UTF-8: the request's id when, read leniently,
 * it is a request in UMA Serve's form (null when it has no id), else undefined (the
 * payload gets `E_PROTO_INVALID_JSON` as usual).
 *
 * @example
 * ```ts
 * import { umaInvalidUtf8Id } from "./uma.ts";
 * const bytes = new Uint8Array([...new TextEncoder().encode('{"id":"x","prompt":"'), 0xc0,
 *   ...new TextEncoder().encode('"}')]);
 * console.log(umaInvalidUtf8Id(bytes)); // "x"
 * ```
 */
export function umaInvalidUtf8Id(payload: Uint8Array): string | null | undefined {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return undefined;
  const m = value as Message;
  if (!isUmaForm(m)) return undefined;
  return typeof m.id === "string" ? m.id : null;
}
