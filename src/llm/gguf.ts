/**
 * GGUF files: a streaming writer (for the models umad generates itself) and a header
 * reader that checks a file before llama.cpp sees it, so a wrong or truncated file
 * gets a clear error instead of a crash.
 *
 * @module
 */

/** A GGUF metadata scalar type. */
export type GgufScalarType =
  | "u8"
  | "i8"
  | "u16"
  | "i16"
  | "u32"
  | "i32"
  | "f32"
  | "bool"
  | "string"
  | "u64"
  | "i64"
  | "f64";

/** A typed metadata value to write. */
export type GgufValue =
  | { type: GgufScalarType; value: number | bigint | boolean | string }
  | {
    type: "array";
    itemType: GgufScalarType;
    values: readonly (number | bigint | boolean | string)[];
  };

/** A metadata value as read back. */
export type GgufReadValue = number | bigint | boolean | string | GgufReadValue[];

/** Tensor element types the writer produces. */
export type GgufTensorType = "F32" | "F16";

/** One tensor to write: its data comes from `fill`, called with consecutive chunks. */
export interface GgufTensorSource {
  /** The tensor's name (`blk.0.attn_q.weight`). */
  name: string;
  /** Dimensions, innermost first (GGUF order). */
  dims: readonly number[];
  /** Element type. */
  type: GgufTensorType;
  /** Writes values `[start, start + out.length)` of the tensor (row-major) into `out`. */
  fill(out: Float32Array, start: number): void;
}

/** A tensor's description as read from a file header. */
export interface GgufTensorInfo {
  /** The tensor's name. */
  name: string;
  /** Dimensions, innermost first. */
  dims: number[];
  /** ggml type number. */
  type: number;
  /** Offset from the start of the data section. */
  offset: number;
  /** Size in bytes when the type is one this reader knows, else undefined. */
  size?: number;
}

/** A metadata value's type as stored: a scalar type, or an array and its item type. */
export type GgufStoredType = GgufScalarType | { array: GgufScalarType };

/** A parsed GGUF header. */
export interface GgufHeader {
  /** GGUF version (2 or 3). */
  version: number;
  /** Metadata values by key. */
  metadata: Map<string, GgufReadValue>;
  /** The stored type of each metadata value, so it can be written back unchanged. */
  types: Map<string, GgufStoredType>;
  /** The tensor table. */
  tensors: GgufTensorInfo[];
  /** File offset of the tensor data section. */
  dataOffset: number;
  /** Alignment of tensor data (general.alignment, default 32). */
  alignment: number;
  /** Size of the file in bytes. */
  fileSize: number;
}

/** The file is not a GGUF file umad can load; the message says why. */
export class GgufError extends Error {
  /** Creates the error (`cause`: the underlying failure). */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GgufError";
  }
}

const MAGIC = 0x46554747; // "GGUF" little-endian
const TYPE_IDS: Record<GgufScalarType | "array", number> = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
};
const TYPE_NAMES = Object.fromEntries(
  Object.entries(TYPE_IDS).map(([name, id]) => [id, name]),
) as Record<number, GgufScalarType | "array">;
const TENSOR_TYPE_IDS: Record<GgufTensorType, number> = { F32: 0, F16: 1 };
/** ggml type number → [block size, bytes per block], for the types whose size is checked. */
const TYPE_SIZES: Record<number, [number, number]> = {
  0: [1, 4], // F32
  1: [1, 2], // F16
  2: [32, 18], // Q4_0
  3: [32, 20], // Q4_1
  6: [32, 22], // Q5_0
  7: [32, 24], // Q5_1
  8: [32, 34], // Q8_0
  10: [256, 84], // Q2_K
  11: [256, 110], // Q3_K
  12: [256, 144], // Q4_K
  13: [256, 176], // Q5_K
  14: [256, 210], // Q6_K
  30: [1, 2], // BF16
};

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Grows a byte buffer as the header is assembled. */
class ByteWriter {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #room(n: number) {
    if (this.length + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u8(v: number) {
    this.#room(1);
    this.#view.setUint8(this.length, v);
    this.length += 1;
  }
  u32(v: number) {
    this.#room(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number | bigint) {
    this.#room(8);
    this.#view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  bytes(b: Uint8Array) {
    this.#room(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  string(s: string) {
    const b = encoder.encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(type: GgufScalarType, v: number | bigint | boolean | string) {
    const n = Number(v);
    this.#room(8);
    const at = this.length;
    switch (type) {
      case "u8":
        this.#view.setUint8(at, n);
        this.length += 1;
        return;
      case "i8":
        this.#view.setInt8(at, n);
        this.length += 1;
        return;
      case "u16":
        this.#view.setUint16(at, n, true);
        this.length += 2;
        return;
      case "i16":
        this.#view.setInt16(at, n, true);
        this.length += 2;
        return;
      case "u32":
        this.#view.setUint32(at, n, true);
        this.length += 4;
        return;
      case "i32":
        this.#view.setInt32(at, n, true);
        this.length += 4;
        return;
      case "f32":
        this.#view.setFloat32(at, n, true);
        this.length += 4;
        return;
      case "bool":
        this.#view.setUint8(at, v ? 1 : 0);
        this.length += 1;
        return;
      case "u64":
        this.#view.setBigUint64(at, BigInt(v as number | bigint), true);
        this.length += 8;
        return;
      case "i64":
        this.#view.setBigInt64(at, BigInt(v as number | bigint), true);
        this.length += 8;
        return;
      case "f64":
        this.#view.setFloat64(at, n, true);
        this.length += 8;
        return;
      case "string":
        this.string(String(v));
        return;
    }
  }
  pad(alignment: number) {
    while (this.length % alignment) this.u8(0);
  }
  get bytesWritten(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}

function writeAllSync(file: Deno.FsFile, data: Uint8Array) {
  let off = 0;
  while (off < data.length) off += file.writeSync(data.subarray(off));
}

function tensorBytes(t: { dims: readonly number[]; type: GgufTensorType }): number {
  return t.dims.reduce((a, b) => a * b, 1) * (t.type === "F32" ? 4 : 2);
}

const ALIGNMENT = 32;
const CHUNK = 1 << 20;

/**
 * Writes a GGUF v3 file, streaming tensor data in 1 MiB chunks so large models need
 * little memory. The file is written under a temporary name and renamed into place.
 *
 * @example
 * ```ts
 * writeGgufSync("/tmp/x.gguf", { "general.architecture": { type: "string", value: "llama" } }, []);
 * ```
 */
export function writeGgufSync(
  path: string,
  metadata: Record<string, GgufValue>,
  tensors: readonly GgufTensorSource[],
): void {
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new TypeError(`Duplicate tensor name "${t.name}"`);
    names.add(t.name);
  }
  const w = new ByteWriter();
  w.u32(MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(Object.keys(metadata).length);
  for (const [key, v] of Object.entries(metadata)) {
    w.string(key);
    if (v.type === "array") {
      w.u32(TYPE_IDS.array);
      w.u32(TYPE_IDS[v.itemType]);
      w.u64(v.values.length);
      for (const item of v.values) w.scalar(v.itemType, item);
    } else {
      w.u32(TYPE_IDS[v.type]);
      w.scalar(v.type, v.value);
    }
  }
  let offset = 0;
  for (const t of tensors) {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(TENSOR_TYPE_IDS[t.type]);
    w.u64(offset);
    offset += tensorBytes(t);
    offset = Math.ceil(offset / ALIGNMENT) * ALIGNMENT;
  }
  w.pad(ALIGNMENT);

  const tmp = `${path}.tmp-${Deno.pid}-${Math.random().toString(36).slice(2)}`;
  const file = Deno.openSync(tmp, { write: true, create: true, truncate: true });
  try {
    writeAllSync(file, w.bytesWritten);
    const f32 = new Float32Array(CHUNK);
    const f16 = new Float16Array(CHUNK);
    const zeros = new Uint8Array(ALIGNMENT);
    for (const t of tensors) {
      const count = t.dims.reduce((a, b) => a * b, 1);
      for (let start = 0; start < count; start += CHUNK) {
        const n = Math.min(CHUNK, count - start);
        const out = f32.subarray(0, n);
        t.fill(out, start);
        if (t.type === "F32") {
          writeAllSync(file, new Uint8Array(out.buffer, 0, n * 4));
        } else {
          const half = f16.subarray(0, n);
          half.set(out);
          writeAllSync(file, new Uint8Array(half.buffer, 0, n * 2));
        }
      }
      const size = tensorBytes(t);
      const pad = (ALIGNMENT - (size % ALIGNMENT)) % ALIGNMENT;
      if (pad) writeAllSync(file, zeros.subarray(0, pad));
    }
    file.close();
    Deno.renameSync(tmp, path);
  } catch (err) {
    try {
      file.close();
    } catch { /* already closed */ }
    try {
      Deno.removeSync(tmp);
    } catch { /* not created */ }
    throw err;
  }
}

/** Reads a file front to back through a window, asking for more as parsing goes. */
class FileReader {
  #file: Deno.FsFile;
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  #start = 0; // file offset of #buf[0]
  #end = 0; // valid bytes in #buf
  pos = 0; // file offset of the next read
  readonly size: number;
  readonly path: string;

  constructor(file: Deno.FsFile, size: number, path: string) {
    this.#file = file;
    this.size = size;
    this.path = path;
  }

  #need(n: number, what: string) {
    if (this.pos + n > this.size) {
      throw new GgufError(
        `"${this.path}" is truncated: reading ${what} needs bytes up to ${this.pos + n}, ` +
          `but the file has ${this.size}`,
      );
    }
    if (this.pos + n <= this.#start + this.#end) return;
    const from = this.pos - this.#start;
    const keep = this.#end - from;
    let buf = this.#buf;
    if (n > buf.length) {
      buf = new Uint8Array(Math.max(n, buf.length * 2));
      buf.set(this.#buf.subarray(from, this.#end));
    } else {
      buf.copyWithin(0, from, this.#end);
    }
    this.#buf = buf;
    this.#view = new DataView(buf.buffer);
    this.#start = this.pos;
    this.#end = keep;
    this.#file.seekSync(this.#start + this.#end, Deno.SeekMode.Start);
    while (this.#end < n) {
      const got = this.#file.readSync(this.#buf.subarray(this.#end));
      if (got === null || got === 0) {
        throw new GgufError(`"${this.path}" is truncated while reading ${what}`);
      }
      this.#end += got;
    }
  }
  #at(n: number, what: string): number {
    this.#need(n, what);
    const at = this.pos - this.#start;
    this.pos += n;
    return at;
  }
  u8(what: string) {
    return this.#view.getUint8(this.#at(1, what));
  }
  u32(what: string) {
    return this.#view.getUint32(this.#at(4, what), true);
  }
  u64(what: string): number {
    const v = this.#view.getBigUint64(this.#at(8, what), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new GgufError(`"${this.path}": ${what} is out of range (${v})`);
    }
    return Number(v);
  }
  string(what: string): string {
    const len = this.u64(`${what} length`);
    if (len > 1 << 26) throw new GgufError(`"${this.path}": ${what} is ${len} bytes long`);
    const at = this.#at(len, what);
    try {
      return strictDecoder.decode(this.#buf.subarray(at, at + len));
    } catch {
      throw new GgufError(`"${this.path}": ${what} is not valid UTF-8`);
    }
  }
  scalar(typeId: number, what: string): GgufReadValue {
    switch (typeId) {
      case 0:
        return this.u8(what);
      case 1:
        return this.#view.getInt8(this.#at(1, what));
      case 2:
        return this.#view.getUint16(this.#at(2, what), true);
      case 3:
        return this.#view.getInt16(this.#at(2, what), true);
      case 4:
        return this.u32(what);
      case 5:
        return this.#view.getInt32(this.#at(4, what), true);
      case 6:
        return this.#view.getFloat32(this.#at(4, what), true);
      case 7:
        return this.u8(what) !== 0;
      case 8:
        return this.string(what);
      case 10:
        return this.#view.getBigUint64(this.#at(8, what), true);
      case 11:
        return this.#view.getBigInt64(this.#at(8, what), true);
      case 12:
        return this.#view.getFloat64(this.#at(8, what), true);
      default:
        throw new GgufError(`"${this.path}": ${what} has unknown value type ${typeId}`);
    }
  }
}

/**
 * A metadata value as read, with its stored type, ready for {@linkcode writeGgufSync}
 * (copies keys from one file to another without changing their types).
 *
 * @example
 * ```ts ignore
 * const h = readGgufHeader("vocab.gguf");
 * const tokens = ggufValueOf(h, "tokenizer.ggml.tokens");
 * ```
 */
export function ggufValueOf(header: GgufHeader, key: string): GgufValue {
  const value = header.metadata.get(key);
  const type = header.types.get(key);
  if (value === undefined || type === undefined) throw new GgufError(`No metadata key "${key}"`);
  if (typeof type === "object") {
    return { type: "array", itemType: type.array, values: value as (string | number)[] };
  }
  return { type, value: value as number | bigint | boolean | string };
}

/**
 * Reads and checks the header of a GGUF file: magic, version, metadata, tensor table,
 * and that every tensor's data lies inside the file. Throws {@linkcode GgufError} with
 * a message naming the file and the problem.
 *
 * @example
 * ```ts
 * const h = readGgufHeader("/tmp/x.gguf");
 * console.log(h.metadata.get("general.architecture"));
 * ```
 */
export function readGgufHeader(path: string): GgufHeader {
  let file: Deno.FsFile;
  let size: number;
  try {
    const st = Deno.statSync(path);
    if (!st.isFile) throw new GgufError(`Model "${path}" is not a regular file`);
    size = st.size;
    file = Deno.openSync(path, { read: true });
  } catch (err) {
    if (err instanceof GgufError) throw err;
    if (err instanceof Deno.errors.NotFound) {
      throw new GgufError(`Model file "${path}" does not exist`, { cause: err });
    }
    throw new GgufError(`Cannot open model file "${path}": ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    const r = new FileReader(file, size, path);
    if (size < 24) {
      throw new GgufError(`"${path}" is not a GGUF model file (only ${size} bytes)`);
    }
    if (r.u32("magic") !== MAGIC) {
      throw new GgufError(`"${path}" is not a GGUF model file (it does not start with "GGUF")`);
    }
    const version = r.u32("version");
    if (version !== 2 && version !== 3) {
      throw new GgufError(`"${path}" is GGUF version ${version}; versions 2 and 3 are supported`);
    }
    const nTensors = r.u64("tensor count");
    const nKv = r.u64("metadata count");
    if (nTensors > 1_000_000 || nKv > 1_000_000) {
      throw new GgufError(`"${path}" has an implausible header (${nTensors} tensors, ${nKv} keys)`);
    }
    const metadata = new Map<string, GgufReadValue>();
    const types = new Map<string, GgufStoredType>();
    const typeName = (id: number, what: string): GgufScalarType => {
      const name = TYPE_NAMES[id];
      if (name === undefined || name === "array") {
        throw new GgufError(`"${path}": ${what} has unknown value type ${id}`);
      }
      return name;
    };
    for (let i = 0; i < nKv; i++) {
      const key = r.string(`metadata key ${i}`);
      const type = r.u32(`type of "${key}"`);
      if (type === 9) {
        const itemType = r.u32(`item type of "${key}"`);
        const count = r.u64(`length of "${key}"`);
        if (count > size - r.pos) {
          throw new GgufError(
            `"${path}" is truncated or corrupt: array "${key}" claims ${count} items, ` +
              `but only ${size - r.pos} bytes remain`,
          );
        }
        const values: GgufReadValue[] = new Array(count);
        for (let j = 0; j < count; j++) values[j] = r.scalar(itemType, `"${key}"[${j}]`);
        metadata.set(key, values);
        types.set(key, { array: typeName(itemType, `item type of "${key}"`) });
      } else {
        metadata.set(key, r.scalar(type, `value of "${key}"`));
        types.set(key, typeName(type, `value of "${key}"`));
      }
    }
    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = r.string(`tensor ${i} name`);
      const nDims = r.u32(`dimension count of "${name}"`);
      if (nDims < 1 || nDims > 4) {
        throw new GgufError(`"${path}": tensor "${name}" has ${nDims} dims`);
      }
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(r.u64(`dims of "${name}"`));
      const type = r.u32(`type of "${name}"`);
      const offset = r.u64(`offset of "${name}"`);
      const known = TYPE_SIZES[type];
      const elements = dims.reduce((a, b) => a * b, 1);
      const info: GgufTensorInfo = { name, dims, type, offset };
      if (known) info.size = Math.ceil(elements / known[0]) * known[1];
      tensors.push(info);
    }
    const alignValue = metadata.get("general.alignment");
    const alignment = typeof alignValue === "number" && alignValue > 0 ? alignValue : ALIGNMENT;
    const dataOffset = Math.ceil(r.pos / alignment) * alignment;
    for (const t of tensors) {
      const end = dataOffset + t.offset + (t.size ?? 0);
      if (end > size) {
        throw new GgufError(
          `"${path}" is truncated: tensor "${t.name}" needs bytes up to ${end}, ` +
            `but the file has ${size}`,
        );
      }
    }
    if (typeof metadata.get("general.architecture") !== "string") {
      throw new GgufError(`"${path}" has no general.architecture; it is not a model file`);
    }
    return { version, metadata, types, tensors, dataOffset, alignment, fileSize: size };
  } finally {
    file.close();
  }
}
