import { Decoder, Encoder } from "@msgpack/msgpack";
import { encodeBase64 } from "./base64.ts";
import { ProtocolError } from "./errors.ts";

/** How one frame's payload is encoded. */
export type Codec = "json" | "msgpack";

/** A decoded message: a plain map. */
export type Message = Record<string, unknown>;

const OPEN_BRACE = 0x7b;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

/**
 * The codec of a payload: JSON when its first byte is `{`, else MessagePack.
 *
 * @example
 * ```ts
 * console.log(detectCodec(new TextEncoder().encode("{}"))); // "json"
 * ```
 */
export function detectCodec(payload: Uint8Array): Codec {
  return payload[0] === OPEN_BRACE ? "json" : "msgpack";
}

/**
 * Decodes a payload into a map. Undecodable bytes throw `E_PROTO_INVALID_JSON`; a
 * payload that decodes to something other than a map throws `E_PROTO_BAD_REQUEST`.
 * JSON binary fields stay base64 strings here; validation turns them into bytes.
 *
 * @example
 * ```ts
 * const { codec, message } = decodePayload(new TextEncoder().encode('{"type":"ping"}'));
 * console.log(codec, message.type); // json ping
 * ```
 */
export function decodePayload(payload: Uint8Array): { codec: Codec; message: Message } {
  const codec = detectCodec(payload);
  let value: unknown;
  try {
    value = codec === "json" ? JSON.parse(textDecoder.decode(payload)) : decoder.decode(payload);
  } catch (e) {
    throw new ProtocolError(
      "E_PROTO_INVALID_JSON",
      codec === "json"
        ? `Payload is not valid JSON: ${(e as Error).message}`
        : `Payload is not valid MessagePack: ${(e as Error).message}`,
    );
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ProtocolError("E_PROTO_BAD_REQUEST", "A message must be a map");
  }
  return { codec, message: value as Message };
}

/**
 * Encodes a map in the given codec. In JSON, top-level `Uint8Array` fields become
 * base64 strings; in MessagePack they are `bin`.
 *
 * @example
 * ```ts
 * const bytes = encodePayload({ event: "pong", id: "1" }, "json");
 * console.log(new TextDecoder().decode(bytes)); // {"event":"pong","id":"1"}
 * ```
 */
export function encodePayload(message: Message, codec: Codec): Uint8Array {
  if (codec === "msgpack") return encoder.encode(message);
  let out: Message = message;
  for (const k in message) {
    const v = message[k];
    if (v instanceof Uint8Array) {
      if (out === message) out = { ...message };
      out[k] = encodeBase64(v);
    }
  }
  return textEncoder.encode(JSON.stringify(out));
}
