// Base64 for binary fields in JSON frames. Uses the built-in Uint8Array methods where
// the runtime has them (Deno 2.9, recent V8) and a portable path elsewhere (Node 20).

type Base64Uint8Array = Uint8Array & { toBase64?: () => string };
type Base64Ctor = { fromBase64?: (s: string) => Uint8Array };

const nativeFrom = (Uint8Array as unknown as Base64Ctor).fromBase64;
const nativeTo = (new Uint8Array(0) as Base64Uint8Array).toBase64 !== undefined;
const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Encodes bytes as standard base64 (with padding).
 *
 * @example
 * ```ts
 * console.log(encodeBase64(new Uint8Array([104, 105]))); // "aGk="
 * ```
 */
export function encodeBase64(bytes: Uint8Array): string {
  if (nativeTo) return (bytes as Base64Uint8Array).toBase64!();
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/**
 * Decodes standard base64; throws `SyntaxError` for anything else.
 *
 * @example
 * ```ts
 * console.log(decodeBase64("aGk=")); // Uint8Array [104, 105]
 * ```
 */
export function decodeBase64(text: string): Uint8Array {
  if (nativeFrom) {
    try {
      return nativeFrom(text);
    } catch (e) {
      throw new SyntaxError(`Invalid base64: ${String(e)}`);
    }
  }
  if (text.length % 4 !== 0 || !B64_RE.test(text)) {
    throw new SyntaxError("Invalid base64");
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
