import { UmadError } from "./errors.ts";

/** Bytes in a frame header: a u32 little-endian payload length. */
export const HEADER_BYTES = 4;

/** The default `--max-frame`: 1 MiB. */
export const DEFAULT_MAX_FRAME = 1 << 20;

/**
 * Prefixes a payload with its u32 little-endian length.
 *
 * @example
 * ```ts
 * const frame = encodeFrame(new TextEncoder().encode("{}"));
 * console.log(frame); // Uint8Array [2, 0, 0, 0, 123, 125]
 * ```
 */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length, true);
  out.set(payload, HEADER_BYTES);
  return out;
}

/**
 * A streaming frame decoder: feed it chunks as they arrive (one byte at a time or
 * many frames at once) and it yields whole payloads. A zero or oversize length throws
 * a {@linkcode UmadError} as soon as the header is complete, before any payload
 * byte is buffered; the decoder is then unusable (the connection must close).
 *
 * @example
 * ```ts
 * const dec = new FrameDecoder();
 * const frames = [...dec.push(new Uint8Array([1, 0, 0, 0, 65]))];
 * console.log(frames.length); // 1
 * ```
 */
export class FrameDecoder {
  /** The largest payload accepted, bytes. */
  readonly maxFrame: number;
  #buf: Uint8Array = new Uint8Array(0);
  #start = 0;
  #end = 0;

  /** A decoder refusing payloads over `maxFrame` bytes. */
  constructor(maxFrame: number = DEFAULT_MAX_FRAME) {
    this.maxFrame = maxFrame;
  }

  /** Bytes received but not yet returned as a frame. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Appends a chunk and yields every payload it completes. */
  *push(chunk: Uint8Array): Generator<Uint8Array> {
    // Fast path: nothing buffered, parse straight out of the chunk.
    let off = 0;
    if (this.#end === this.#start) {
      while (chunk.length - off >= HEADER_BYTES) {
        const len = this.#readLength(chunk, off);
        if (chunk.length - off - HEADER_BYTES < len) break;
        yield chunk.subarray(off + HEADER_BYTES, off + HEADER_BYTES + len);
        off += HEADER_BYTES + len;
      }
      if (off === chunk.length) return;
    }
    this.#append(chunk.subarray(off));
    while (this.#end - this.#start >= HEADER_BYTES) {
      const len = this.#readLength(this.#buf, this.#start);
      if (this.#end - this.#start - HEADER_BYTES < len) break;
      const from = this.#start + HEADER_BYTES;
      // Copy out: the buffer is reused after compaction.
      const payload = this.#buf.slice(from, from + len);
      this.#start = from + len;
      yield payload;
    }
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  #readLength(bytes: Uint8Array, at: number): number {
    const len = (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16)) +
      bytes[at + 3] * 0x1000000;
    if (len === 0) throw new UmadError("E_PROTO_INVALID_LEN", "Frame length is 0");
    if (len > this.maxFrame) {
      throw new UmadError(
        "E_PROTO_FRAME_TOO_LARGE",
        `Frame length ${len} is above the limit of ${this.maxFrame} bytes`,
      );
    }
    return len;
  }

  #append(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const live = this.#end - this.#start;
    if (this.#end + bytes.length > this.#buf.length) {
      if (live + bytes.length <= this.#buf.length && this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const grown = new Uint8Array(Math.max(live + bytes.length, this.#buf.length * 2, 4096));
        grown.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = grown;
      }
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(bytes, this.#end);
    this.#end += bytes.length;
  }
}
