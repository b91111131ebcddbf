import { Decoder, Encoder } from "@msgpack/msgpack";
import { encodeBase64 } from "./base64.ts";
import { UmadError } from "./errors.ts";
import { findInvalidUtf8Str, hasHighByte } from "./msgpack_strings.ts";

/** How one frame's payload is encoded. */
export type Codec = "json" | "msgpack";

/** A decoded message: a plain map. */
export type Message = Record<string, unknown>;

const OPEN_BRACE = 0x7b;
/** Below this size, ASCII text is converted in JS: cheaper than a call into the runtime. */
const SMALL_TEXT = 1024;
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
 * Decodes a payload into a map. Undecodable bytes throw `E_PROTO_INVALID_JSON`, and so
 * does a MessagePack `str` that is not valid UTF-8 (as JSON refuses it); a
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
    value = codec === "json" ? JSON.parse(utf8Decode(payload)) : decoder.decode(payload);
  } catch (e) {
    throw new UmadError(
      "E_PROTO_INVALID_JSON",
      codec === "json"
        ? `Payload is not valid JSON: ${(e as Error).message}`
        : `Payload is not valid MessagePack: ${(e as Error).message}`,
    );
  }
  if (codec === "msgpack" && hasHighByte(payload)) {
    const at = findInvalidUtf8Str(payload);
    if (at >= 0) {
      throw new UmadError(
        "E_PROTO_INVALID_JSON",
        `Payload is not valid MessagePack: the str at byte ${at} is not valid UTF-8 ` +
          `(send raw bytes as bin)`,
      );
    }
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new UmadError("E_PROTO_BAD_REQUEST", "A message must be a map");
  }
  return { codec, message: value as Message };
}

function utf8Decode(bytes: Uint8Array): string {
  if (bytes.length <= SMALL_TEXT) {
    let ascii = true;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  return textDecoder.decode(bytes);
}

function jsonReady(message: Message): Message {
  let out: Message = message;
  for (const k in message) {
    const v = message[k];
    if (v instanceof Uint8Array) {
      if (out === message) out = { ...message };
      out[k] = encodeBase64(v);
    }
  }
  return out;
}

/**
 * Encodes a map as a whole frame (length header included) in one allocation.
 *
 * @example
 * ```ts
 * const frame = encodeMessageFrame({ event: "pong", id: "1" }, "json");
 * console.log(frame[0], frame.length); // 25 29
 * ```
 */
export function encodeMessageFrame(message: Message, codec: Codec): Uint8Array {
  let frame: Uint8Array;
  if (codec === "msgpack") {
    const body = encoder.encodeSharedRef(message);
    frame = new Uint8Array(4 + body.length);
    frame.set(body, 4);
  } else {
    const text = JSON.stringify(jsonReady(message));
    const n = text.length;
    if (n <= SMALL_TEXT) {
      frame = new Uint8Array(4 + n);
      let i = 0;
      for (; i < n; i++) {
        const c = text.charCodeAt(i);
        if (c > 0x7f) break;
        frame[4 + i] = c;
      }
      if (i < n) frame = withHeader(textEncoder.encode(text));
    } else {
      frame = withHeader(textEncoder.encode(text));
    }
  }
  const len = frame.length - 4;
  frame[0] = len & 0xff;
  frame[1] = (len >>> 8) & 0xff;
  frame[2] = (len >>> 16) & 0xff;
  frame[3] = (len >>> 24) & 0xff;
  return frame;
}

function withHeader(body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(4 + body.length);
  frame.set(body, 4);
  return frame;
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
  return textEncoder.encode(JSON.stringify(jsonReady(message)));
}
