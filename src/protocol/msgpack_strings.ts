/**
 * Strict UTF-8 for MessagePack `str`: `@msgpack/msgpack`'s decoder repairs invalid
 * UTF-8 silently (its JS path for short strings ignores continuation bits, so
 * `c3 28 ff` becomes other characters), while JSON refuses the same bytes. This walks
 * a payload's structure, skipping everything but `str` bodies, and finds the first one
 * that is not valid UTF-8. `bin` stays the way to send raw bytes.
 *
 * @module
 */

/**
 * True when `bytes[start, end)` is well-formed UTF-8 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), as `TextDecoder({fatal: true})` decides, without
 * building a string: measured here, a JS loop costs a fraction of Deno's TextDecoder
 * call for the same bytes (bench: `deno task bench --only codec`).
 *
 * @example
 * ```ts
 * import { isUtf8 } from "./msgpack_strings.ts";
 * const bytes = new Uint8Array([0x68, 0xc3, 0xa9, 0xc3, 0x28]);
 * console.log(isUtf8(bytes, 0, 3), isUtf8(bytes, 0, 5)); // true false
 * ```
 */
export function isUtf8(bytes: Uint8Array, start: number, end: number): boolean {
  const b = bytes;
  let i = end - start >= ASCII_WORDS_FROM ? skipAsciiWords(b, start, end) : start;
  while (i < end) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c < 0xc2) return false; // a continuation byte, or an overlong 2-byte lead
    if (c < 0xe0) {
      if (i + 1 >= end || (b[i + 1] & 0xc0) !== 0x80) return false;
      i += 2;
      continue;
    }
    if (c < 0xf0) {
      if (i + 2 >= end) return false;
      const c1 = b[i + 1];
      if ((c1 & 0xc0) !== 0x80 || (b[i + 2] & 0xc0) !== 0x80) return false;
      if (c === 0xe0 && c1 < 0xa0) return false; // overlong
      if (c === 0xed && c1 > 0x9f) return false; // UTF-16 surrogates
      i += 3;
      continue;
    }
    if (c < 0xf5) {
      if (i + 3 >= end) return false;
      const c1 = b[i + 1];
      if ((c1 & 0xc0) !== 0x80 || (b[i + 2] & 0xc0) !== 0x80 || (b[i + 3] & 0xc0) !== 0x80) {
        return false;
      }
      if (c === 0xf0 && c1 < 0x90) return false; // overlong
      if (c === 0xf4 && c1 > 0x8f) return false; // above U+10FFFF
      i += 4;
      continue;
    }
    return false;
  }
  return true;
}

/** Strings at least this long skip their ASCII runs four bytes at a time. */
const ASCII_WORDS_FROM = 32;

/** The index of the first byte above 0x7f, at most `end`, read a 32-bit word at a time. */
function skipAsciiWords(b: Uint8Array, start: number, end: number): number {
  let i = start;
  while (i < end && ((b.byteOffset + i) & 3) !== 0) {
    if (b[i] >= 0x80) return i;
    i++;
  }
  const words = (end - i) >>> 2;
  if (words > 0) {
    const w = new Uint32Array(b.buffer, b.byteOffset + i, words);
    let k = 0;
    while (k < words && (w[k] & 0x80808080) === 0) k++;
    i += k * 4;
  }
  while (i < end && b[i] < 0x80) i++;
  return i;
}

/**
 * True when `payload` holds a byte above 0x7f: without one, no `str` can be invalid
 * UTF-8, and {@linkcode findInvalidUtf8Str} need not run.
 *
 * @example
 * ```ts
 * import { hasHighByte } from "./msgpack_strings.ts";
 * console.log(hasHighByte(new Uint8Array([0x81, 0xa1, 0x61]))); // true
 * ```
 */
export function hasHighByte(payload: Uint8Array): boolean {
  for (let i = 0; i < payload.length; i++) if (payload[i] > 0x7f) return true;
  return false;
}

/**
 * The offset of the first `str` (map keys included) whose bytes are not valid UTF-8,
 * or -1 when every one is (or the payload is malformed: the decoder reports that).
 * Walks one value and everything nested in it without building anything.
 *
 * @example
 * ```ts
 * import { findInvalidUtf8Str } from "./msgpack_strings.ts";
 * // {"a": str c3 28 ff}
 * const bad = new Uint8Array([0x81, 0xa1, 0x61, 0xa3, 0xc3, 0x28, 0xff]);
 * console.log(findInvalidUtf8Str(bad)); // 3
 * // {"a": bin c3 28 ff}
 * const raw = new Uint8Array([0x81, 0xa1, 0x61, 0xc4, 0x03, 0xc3, 0x28, 0xff]);
 * console.log(findInvalidUtf8Str(raw)); // -1
 * ```
 */
export function findInvalidUtf8Str(payload: Uint8Array): number {
  const b = payload;
  const n = b.length;
  const u16 = (i: number) => (b[i] << 8) | b[i + 1];
  const u32 = (i: number) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
  let pos = 0;
  let values = 1; // still to walk
  while (values > 0) {
    if (pos >= n) return -1;
    values--;
    const t = b[pos];
    let strStart = -1;
    let strLen = 0;
    if (t <= 0x7f || t >= 0xe0) {
      pos += 1; // fixint
    } else if (t <= 0x8f) {
      values += 2 * (t & 0x0f); // fixmap
      pos += 1;
    } else if (t <= 0x9f) {
      values += t & 0x0f; // fixarray
      pos += 1;
    } else if (t <= 0xbf) {
      strStart = pos + 1; // fixstr
      strLen = t & 0x1f;
    } else {
      switch (t) {
        case 0xc0: // nil
        case 0xc2: // false
        case 0xc3: // true
          pos += 1;
          break;
        case 0xc4: // bin 8
          pos += 2 + b[pos + 1];
          break;
        case 0xc5: // bin 16
          pos += 3 + u16(pos + 1);
          break;
        case 0xc6: // bin 32
          pos += 5 + u32(pos + 1);
          break;
        case 0xc7: // ext 8
          pos += 3 + b[pos + 1];
          break;
        case 0xc8: // ext 16
          pos += 4 + u16(pos + 1);
          break;
        case 0xc9: // ext 32
          pos += 6 + u32(pos + 1);
          break;
        case 0xca: // float 32
        case 0xce: // uint 32
        case 0xd2: // int 32
          pos += 5;
          break;
        case 0xcb: // float 64
        case 0xcf: // uint 64
        case 0xd3: // int 64
          pos += 9;
          break;
        case 0xcc: // uint 8
        case 0xd0: // int 8
          pos += 2;
          break;
        case 0xcd: // uint 16
        case 0xd1: // int 16
          pos += 3;
          break;
        case 0xd4: // fixext 1
          pos += 3;
          break;
        case 0xd5: // fixext 2
          pos += 4;
          break;
        case 0xd6: // fixext 4
          pos += 6;
          break;
        case 0xd7: // fixext 8
          pos += 10;
          break;
        case 0xd8: // fixext 16
          pos += 18;
          break;
        case 0xd9: // str 8
          strStart = pos + 2;
          strLen = b[pos + 1];
          break;
        case 0xda: // str 16
          strStart = pos + 3;
          strLen = u16(pos + 1);
          break;
        case 0xdb: // str 32
          strStart = pos + 5;
          strLen = u32(pos + 1);
          break;
        case 0xdc: // array 16
          values += u16(pos + 1);
          pos += 3;
          break;
        case 0xdd: // array 32
          values += u32(pos + 1);
          pos += 5;
          break;
        case 0xde: // map 16
          values += 2 * u16(pos + 1);
          pos += 3;
          break;
        case 0xdf: // map 32
          values += 2 * u32(pos + 1);
          pos += 5;
          break;
        default: // 0xc1: never used
          return -1;
      }
    }
    if (strStart >= 0) {
      const end = strStart + strLen;
      if (end > n) return -1;
      if (!isUtf8(b, strStart, end)) return pos;
      pos = end;
    }
  }
  return -1;
}
