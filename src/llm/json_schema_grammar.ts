/**
 * JSON Schema → GBNF, so `json_schema` constrains generation with a grammar. umad's own
 * converter: no maintained npm package does this (checked: `json-schema-to-gbnf`,
 * `gbnfgen` and `sql2gbnf` are not on the registry; node-llama-cpp's converter handles
 * its own schema subset inside that package, and llama.cpp's lives in C++ and Python).
 *
 * Supported: `type` (one or several), `properties` with `required` and optional ones,
 * `additionalProperties` (false by default, true, or a schema; extra keys never repeat a
 * declared one), `items`, `prefixItems`, `minItems`/`maxItems`, `enum`, `const`,
 * `anyOf`/`oneOf` (oneOf's exclusivity is not enforced), `allOf` of objects, strings with
 * `minLength`/`maxLength` and `format` date, time, date-time, uuid, integers and numbers
 * with `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`, `$ref` to `#/$defs/...`
 * or `#/definitions/...` (recursion allowed). Anything else that constrains values
 * (`pattern`, `multipleOf`, `not`, `if`, remote `$ref`...) is refused with a
 * {@linkcode SchemaError} naming it, rather than silently producing invalid output.
 *
 * The output is compact JSON (at most one space where JSON allows whitespace), so a
 * model cannot pad it forever.
 *
 * @module
 */

/** A schema umad cannot turn into a grammar; the message names the keyword and where. */
export class SchemaError extends Error {
  /** Creates the error; the message names the keyword and its place. */
  constructor(message: string) {
    super(message);
    this.name = "SchemaError";
  }
}

type Schema = Record<string, unknown> | boolean;

/** Keywords that constrain values and that the converter does not implement. */
const UNSUPPORTED = [
  "pattern",
  "patternProperties",
  "multipleOf",
  "not",
  "if",
  "then",
  "else",
  "dependentRequired",
  "dependentSchemas",
  "contains",
  "uniqueItems",
  "minProperties",
  "maxProperties",
  "unevaluatedProperties",
  "unevaluatedItems",
];

/** Largest digits in an unbounded integer part (JSON numbers stay exact in JS). */
const MAX_DIGITS = 15;
/** Deepest nesting of schemas converted (the converter recurses per level). */
const MAX_SCHEMA_DEPTH = 64;
/** Bounds of repetitions llama.cpp accepts. */
const MAX_REPEAT = 2000;

const PRIMITIVES: Record<string, string> = {
  ws: '" "?',
  char:
    '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))',
  "plain-char": '[^"\\\\\\x7F\\x00-\\x1F]',
  string: '"\\"" char* "\\"" ws',
  boolean: '("true" | "false") ws',
  null: '"null" ws',
  integer: '"-"? ("0" | [1-9] [0-9]{0,14}) ws',
  number: '"-"? ("0" | [1-9] [0-9]{0,14}) ("." [0-9]{1,15})? ([eE] [-+]? [0-9]{1,2})? ws',
  value: "object | array | string | number | boolean | null",
  object: '"{" ws (string ":" ws value ("," ws string ":" ws value)*)? "}" ws',
  array: '"[" ws (value ("," ws value)*)? "]" ws',
  "date-d": '[0-9]{4} "-" ("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]) | ' +
    '[0-9]{4} "-" ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30") | ' +
    '[0-9]{4} "-02-" ("0" [1-9] | "1" [0-9] | "2" [0-8])',
  "time-t": '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? ' +
    '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])',
  "uuid-u": '[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}',
};

/** A GBNF string literal for `s`. */
export function gbnfLiteral(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${cp.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + '"';
}

/** A GBNF character class member for one character. */
function classChar(ch: string): string {
  const cp = ch.codePointAt(0)!;
  if (ch === "]" || ch === "[" || ch === "\\" || ch === "^" || ch === "-") return `\\${ch}`;
  if (cp < 0x20 || cp === 0x7f) return `\\x${cp.toString(16).padStart(2, "0")}`;
  return ch;
}

/** Digits of numbers of the same length from `lo` to `hi` (decimal strings). */
function sameLength(lo: string, hi: string): string {
  if (lo.length === 0) return "";
  if (lo === hi) return gbnfLiteral(lo);
  const rest = lo.length - 1;
  const any = (n: number) => (n === 0 ? "" : n === 1 ? " [0-9]" : ` [0-9]{${n}}`);
  const [a, b] = [Number(lo[0]), Number(hi[0])];
  if (a === b) return `${gbnfLiteral(lo[0])} (${sameLength(lo.slice(1), hi.slice(1))})`;
  if (/^0*$/.test(lo.slice(1)) && /^9*$/.test(hi.slice(1))) return `[${a}-${b}]${any(rest)}`;
  const alts = [`${gbnfLiteral(lo[0])} (${sameLength(lo.slice(1), "9".repeat(rest))})`];
  if (b - a >= 2) alts.push(`[${a + 1}-${b - 1}]${any(rest)}`);
  alts.push(`${gbnfLiteral(hi[0])} (${sameLength("0".repeat(rest), hi.slice(1))})`);
  return alts.join(" | ");
}

/** Decimal numbers without leading zeros from `lo` to `hi` (hi may be Infinity). */
function nonNegativeRange(lo: number, hi: number): string {
  const alts: string[] = [];
  const maxLen = hi === Infinity ? MAX_DIGITS : String(hi).length;
  for (let len = String(lo).length; len <= maxLen; len++) {
    const first = len === 1 ? 0 : 10 ** (len - 1);
    const last = 10 ** len - 1;
    const a = Math.max(lo, first);
    const b = Math.min(hi, last);
    if (a > b) continue;
    alts.push(`(${sameLength(String(a), String(b))})`);
  }
  if (alts.length === 0) throw new SchemaError("empty integer range");
  return alts.join(" | ");
}

/** Integers from `lo` to `hi` inclusive (either may be infinite) as GBNF. */
function integerRange(lo: number, hi: number): string {
  if (lo > hi) throw new SchemaError(`no integer lies between ${lo} and ${hi}`);
  for (const v of [lo, hi]) {
    if (Number.isFinite(v) && Math.abs(v) > Number.MAX_SAFE_INTEGER) {
      throw new SchemaError(`integer bound ${v} is beyond 2^53`);
    }
  }
  const alts: string[] = [];
  if (lo < 0) {
    const negHi = Math.min(-1, hi); // -negHi..-lo as magnitudes
    alts.push(`"-" (${nonNegativeRange(-negHi, -lo)})`);
  }
  if (hi >= 0) alts.push(`(${nonNegativeRange(Math.max(0, lo), hi)})`);
  return alts.join(" | ");
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function bound(schema: Record<string, unknown>, key: string, where: string): number | undefined {
  const v = schema[key];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new SchemaError(`${where}: "${key}" must be a number`);
  }
  return v;
}

function count(schema: Record<string, unknown>, key: string, where: string): number | undefined {
  const v = bound(schema, key, where);
  if (v !== undefined && !(Number.isInteger(v) && v >= 0 && v <= MAX_REPEAT)) {
    throw new SchemaError(`${where}: "${key}" must be an integer from 0 to ${MAX_REPEAT}`);
  }
  return v;
}

/** `{min,max}` for GBNF ("*" style when unbounded). */
function repeat(min: number, max: number | undefined): string {
  if (max === undefined) return min === 0 ? "*" : min === 1 ? "+" : `{${min},}`;
  if (min === max) return `{${min}}`;
  return `{${min},${max}}`;
}

class Converter {
  readonly rules = new Map<string, string>();
  readonly #refs = new Map<string, string>();
  #n = 0;
  constructor(readonly root: Schema, readonly prefix = "") {}

  #rule(hint: string, body: string): string {
    const base = hint.replace(/[^a-zA-Z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "r";
    const name = `${this.prefix}${base}-${this.#n++}`;
    this.rules.set(name, body);
    return name;
  }

  #resolve(ref: string, where: string): Schema {
    if (!ref.startsWith("#")) {
      throw new SchemaError(`${where}: only local "$ref"s ("#/$defs/...") are supported`);
    }
    let node: unknown = this.root;
    for (const raw of ref.slice(1).split("/").filter(Boolean)) {
      const key = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
      if (!isObject(node) || !(key in node)) {
        throw new SchemaError(`${where}: "$ref" ${ref} not found`);
      }
      node = node[key];
    }
    if (typeof node !== "boolean" && !isObject(node)) {
      throw new SchemaError(`${where}: "$ref" ${ref} is not a schema`);
    }
    return node;
  }

  /** The rule name that matches `schema` followed by optional whitespace. */
  visit(schema: Schema, where: string): string {
    if (++this.#depth > MAX_SCHEMA_DEPTH) {
      throw new SchemaError(`${where}: schemas nested deeper than ${MAX_SCHEMA_DEPTH}`);
    }
    try {
      return this.#visit(schema, where);
    } finally {
      this.#depth--;
    }
  }

  #depth = 0;

  #visit(schema: Schema, where: string): string {
    if (schema === true) return "value";
    if (schema === false) throw new SchemaError(`${where}: the schema false matches no value`);
    if (!isObject(schema)) throw new SchemaError(`${where}: a schema must be an object or boolean`);
    // `false` arrives as {not: {}} (messages.ts): say what it means.
    if (isObject(schema.not) && Object.keys(schema.not).length === 0) {
      throw new SchemaError(`${where}: the schema matches no value`);
    }
    for (const k of UNSUPPORTED) {
      if (k in schema) throw new SchemaError(`${where}: "${k}" is not supported`);
    }
    if (typeof schema.$ref === "string") {
      const ref = schema.$ref;
      const known = this.#refs.get(ref);
      if (known) return known;
      // Named before it is visited, so recursive schemas refer back to it.
      const name = this.#rule(ref.split("/").pop() ?? "ref", "");
      this.#refs.set(ref, name);
      this.rules.set(name, this.visit(this.#resolve(ref, where), `${where}/$ref`));
      return name;
    }
    if ("const" in schema) {
      return this.#rule("const", `${gbnfLiteral(JSON.stringify(schema.const))} ws`);
    }
    if (Array.isArray(schema.enum)) {
      if (schema.enum.length === 0) throw new SchemaError(`${where}: "enum" is empty`);
      const alts = schema.enum.map((v) => gbnfLiteral(JSON.stringify(v)));
      return this.#rule("enum", `(${alts.join(" | ")}) ws`);
    }
    for (const key of ["anyOf", "oneOf"] as const) {
      const list = schema[key];
      if (list === undefined) continue;
      if (!Array.isArray(list) || list.length === 0) {
        throw new SchemaError(`${where}: "${key}" must be a non-empty array`);
      }
      const alts = list.map((s, i) => this.visit(s as Schema, `${where}/${key}/${i}`));
      return this.#rule(key, alts.join(" | "));
    }
    if (schema.allOf !== undefined) return this.visit(this.#mergeAllOf(schema, where), where);
    const type = schema.type;
    if (Array.isArray(type)) {
      if (type.length === 0) throw new SchemaError(`${where}: "type" is an empty list`);
      const alts = type.map((t) => this.visit({ ...schema, type: t }, `${where}(${t})`));
      return this.#rule("types", alts.join(" | "));
    }
    switch (type) {
      case "object":
        return this.#object(schema, where);
      case "array":
        return this.#array(schema, where);
      case "string":
        return this.#string(schema, where);
      case "integer":
        return this.#integer(schema, where);
      case "number":
        return this.#number(schema, where);
      case "boolean":
        return "boolean";
      case "null":
        return "null";
      case undefined:
        if ("properties" in schema || "additionalProperties" in schema) {
          return this.#object(schema, where);
        }
        if ("items" in schema || "prefixItems" in schema) return this.#array(schema, where);
        return "value";
      default:
        throw new SchemaError(`${where}: unknown "type" ${JSON.stringify(type)}`);
    }
  }

  #mergeAllOf(schema: Record<string, unknown>, where: string): Schema {
    const list = schema.allOf;
    if (!Array.isArray(list) || list.length === 0) {
      throw new SchemaError(`${where}: "allOf" must be a non-empty array`);
    }
    const { allOf: _, ...rest } = schema;
    const merged: Record<string, unknown> = {
      ...rest,
      type: "object",
      properties: {},
      required: [],
    };
    for (const [i, raw] of [rest, ...list].entries()) {
      let s = raw as Schema;
      while (isObject(s) && typeof s.$ref === "string") s = this.#resolve(s.$ref, where);
      if (!isObject(s)) throw new SchemaError(`${where}/allOf/${i}: must be an object schema`);
      if (s.type !== undefined && s.type !== "object") {
        throw new SchemaError(`${where}: "allOf" is supported for object schemas only`);
      }
      Object.assign(merged.properties as object, s.properties ?? {});
      (merged.required as string[]).push(...((s.required as string[]) ?? []));
      if (s.additionalProperties !== undefined) {
        merged.additionalProperties = s.additionalProperties;
      }
    }
    return merged;
  }

  #object(schema: Record<string, unknown>, where: string): string {
    const props = schema.properties ?? {};
    if (!isObject(props)) throw new SchemaError(`${where}: "properties" must be an object`);
    const required = schema.required ?? [];
    if (!Array.isArray(required) || required.some((r) => typeof r !== "string")) {
      throw new SchemaError(`${where}: "required" must be an array of strings`);
    }
    const names = [...Object.keys(props)];
    for (const r of required as string[]) if (!names.includes(r)) names.push(r);
    const kv = (name: string) => {
      const value = this.visit((props[name] ?? true) as Schema, `${where}/properties/${name}`);
      return this.#rule(`${name}-kv`, `${gbnfLiteral(JSON.stringify(name))} ws ":" ws ${value}`);
    };
    const req = names.filter((n) => (required as string[]).includes(n)).map(kv);
    const opt = names.filter((n) => !(required as string[]).includes(n)).map(kv);
    const additional = schema.additionalProperties;
    let extra: string | null = null;
    if (additional !== undefined && additional !== false) {
      const value = this.visit(additional as Schema, `${where}/additionalProperties`);
      const key = this.#notStrings(names, this.#keyLength(schema.propertyNames, where));
      extra = this.#rule("additional-kv", `${key} ws ":" ws ${value}`);
    }
    const extraTail = extra ? ` ("," ws ${extra})*` : "";
    let body: string;
    if (req.length > 0) {
      body = req.join(' "," ws ') + opt.map((o) => ` ("," ws ${o})?`).join("") + extraTail;
    } else if (opt.length > 0 || extra) {
      // Without a required property, any optional one may come first.
      let rest = this.#rule("rest", extraTail.trim() || '""');
      const firsts: string[] = extra ? [`${extra}${extraTail}`] : [];
      for (let i = opt.length - 1; i >= 0; i--) {
        firsts.unshift(`${opt[i]} ${rest}`);
        rest = this.#rule("rest", `("," ws ${opt[i]})? ${rest}`);
      }
      body = `(${firsts.join(" | ")})?`;
    } else {
      body = "";
    }
    return this.#rule("object", `"{" ws ${body} "}" ws`);
  }

  /** The longest extra key `propertyNames` allows (only `maxLength` is supported). */
  #keyLength(names: unknown, where: string): number {
    if (names === undefined || names === true) return Infinity;
    if (!isObject(names)) throw new SchemaError(`${where}: "propertyNames" must be a schema`);
    for (const k of Object.keys(names)) {
      if (k !== "maxLength" && k !== "type") {
        throw new SchemaError(`${where}: "propertyNames" supports only "maxLength"`);
      }
    }
    return count(names, "maxLength", `${where}/propertyNames`) ?? Infinity;
  }

  /** A JSON string (no escapes) of at most `maxLength` characters that is none of `names`. */
  #notStrings(names: string[], maxLength: number): string {
    const tail = (n: number) => (n === Infinity ? "plain-char*" : `plain-char{0,${n}}`);
    if (names.length === 0) {
      if (maxLength === 0) throw new SchemaError("no extra property name fits");
      return this.#rule("key", `"\\"" plain-char ${tail(maxLength - 1)} "\\""`);
    }
    interface Node {
      children: Map<string, Node>;
      end: boolean;
    }
    const root: Node = { children: new Map(), end: false };
    for (const n of names) {
      let node = root;
      for (const ch of n) {
        let next = node.children.get(ch);
        if (!next) node.children.set(ch, next = { children: new Map(), end: false });
        node = next;
      }
      node.end = true;
    }
    const build = (node: Node, depth: number): string => {
      const alts: string[] = [];
      if (depth < maxLength) {
        for (const [ch, child] of node.children) {
          alts.push(`${gbnfLiteral(ch)} ${build(child, depth + 1)}`);
        }
        const others = [...node.children.keys()].map(classChar).join("");
        alts.push(`[^"\\\\\\x7F\\x00-\\x1F${others}] ${tail(maxLength - depth - 1)}`);
      }
      if (!node.end) alts.push('""');
      if (alts.length === 0) return "[^\\x00-\\U0010FFFF]"; // nothing: a declared name at the limit
      return this.#rule("not-key", alts.join(" | "));
    };
    const body = build(root, 0);
    return this.#rule("key", `"\\"" ${body} "\\""`);
  }

  #array(schema: Record<string, unknown>, where: string): string {
    const min = count(schema, "minItems", where) ?? 0;
    const max = count(schema, "maxItems", where);
    if (max !== undefined && max < min) throw new SchemaError(`${where}: "maxItems" < "minItems"`);
    if (Array.isArray(schema.prefixItems)) {
      const items = schema.prefixItems.map((s, i) =>
        this.visit(s as Schema, `${where}/prefixItems/${i}`)
      );
      if (schema.items !== undefined && schema.items !== false) {
        throw new SchemaError(`${where}: "prefixItems" with more "items" is not supported`);
      }
      return this.#rule("tuple", `"[" ws ${items.join(' "," ws ')} "]" ws`);
    }
    const item = this.visit((schema.items ?? true) as Schema, `${where}/items`);
    let body: string;
    if (max === 0) body = "";
    else if (min === 0) {
      body = `(${item} ("," ws ${item})${repeat(0, max === undefined ? undefined : max - 1)})?`;
    } else {body = `${item} ("," ws ${item})${
        repeat(min - 1, max === undefined ? undefined : max - 1)
      }`;}
    return this.#rule("array", `"[" ws ${body} "]" ws`);
  }

  #string(schema: Record<string, unknown>, where: string): string {
    const format = schema.format;
    if (format !== undefined) {
      const known: Record<string, string> = {
        date: "date-d",
        time: "time-t",
        "date-time": 'date-d "T" time-t',
        uuid: "uuid-u",
      };
      if (typeof format !== "string" || !(format in known)) {
        throw new SchemaError(
          `${where}: string format ${JSON.stringify(format)} is not supported ` +
            `(supported: date, time, date-time, uuid)`,
        );
      }
      return this.#rule(format, `"\\"" ${known[format]} "\\"" ws`);
    }
    const min = count(schema, "minLength", where) ?? 0;
    const max = count(schema, "maxLength", where);
    if (max !== undefined && max < min) {
      throw new SchemaError(`${where}: "maxLength" < "minLength"`);
    }
    if (min === 0 && max === undefined) return "string";
    return this.#rule("string", `"\\"" char${repeat(min, max)} "\\"" ws`);
  }

  #bounds(schema: Record<string, unknown>, where: string) {
    const lo = bound(schema, "minimum", where);
    const hi = bound(schema, "maximum", where);
    const xlo = bound(schema, "exclusiveMinimum", where);
    const xhi = bound(schema, "exclusiveMaximum", where);
    return {
      lo: Math.max(lo ?? -Infinity, xlo ?? -Infinity),
      loExclusive: xlo !== undefined && (lo === undefined || xlo >= lo),
      hi: Math.min(hi ?? Infinity, xhi ?? Infinity),
      hiExclusive: xhi !== undefined && (hi === undefined || xhi <= hi),
    };
  }

  #integer(schema: Record<string, unknown>, where: string): string {
    const b = this.#bounds(schema, where);
    if (b.lo === -Infinity && b.hi === Infinity) return "integer";
    let lo = Math.ceil(b.lo);
    if (b.loExclusive && lo === b.lo) lo++;
    let hi = Math.floor(b.hi);
    if (b.hiExclusive && hi === b.hi) hi--;
    if (lo === -Infinity) lo = -(10 ** MAX_DIGITS - 1);
    return this.#rule("integer", `(${integerRange(lo, hi)}) ws`);
  }

  #number(schema: Record<string, unknown>, where: string): string {
    const b = this.#bounds(schema, where);
    if (b.lo === -Infinity && b.hi === Infinity) return "number";
    const alts: string[] = [];
    // Whole numbers inside the bounds.
    let ilo = Math.ceil(b.lo);
    if (b.loExclusive && ilo === b.lo) ilo++;
    let ihi = Math.floor(b.hi);
    if (b.hiExclusive && ihi === b.hi) ihi--;
    const cap = 10 ** MAX_DIGITS - 1;
    ilo = Math.max(ilo, -cap);
    if (ilo <= ihi) alts.push(`(${integerRange(ilo, ihi)})`);
    // k.f (k >= 0) lies strictly between k and k+1; -m.f strictly between -(m+1) and -m.
    const frac = '"." [0-9]{0,5} [1-9]';
    const kLo = Math.max(0, Math.ceil(b.lo));
    const kHi = b.hi === Infinity ? Infinity : Math.floor(b.hi) - 1;
    if (kLo <= kHi) alts.push(`(${integerRange(kLo, kHi)}) ${frac}`);
    const mLo = b.hi === Infinity ? 0 : Math.max(0, Math.ceil(-b.hi));
    const mHi = b.lo === -Infinity ? cap : Math.floor(-b.lo) - 1;
    if (mLo <= mHi) alts.push(`"-" (${integerRange(mLo, mHi)}) ${frac}`);
    if (alts.length === 0) throw new SchemaError(`${where}: no number lies within the bounds`);
    return this.#rule("number", `(${alts.join(" | ")}) ws`);
  }
}

/**
 * The GBNF grammar (root rule `root`) of the JSON documents `schema` accepts. Throws
 * {@linkcode SchemaError} for a schema it cannot convert, naming the keyword and its
 * place in the schema.
 *
 * @example
 * ```ts
 * import { jsonSchemaToGrammar } from "./json_schema_grammar.ts";
 * const gbnf = jsonSchemaToGrammar({
 *   type: "object",
 *   properties: { ok: { type: "boolean" } },
 *   required: ["ok"],
 * });
 * console.log(gbnf.startsWith("root ::=")); // true
 * ```
 */
export function jsonSchemaToGrammar(schema: Record<string, unknown> | boolean): string {
  const part = schemaGrammarPart(schema);
  return grammarText(new Map([["root", part.top], ...part.rules]));
}

/**
 * The rules of one schema, named with `prefix` (so several schemas share one grammar):
 * `top` is the rule that matches the schema's JSON. Assemble with {@linkcode grammarText}.
 */
export function schemaGrammarPart(
  schema: Record<string, unknown> | boolean,
  prefix = "",
): { top: string; rules: Map<string, string> } {
  const c = new Converter(schema, prefix);
  const top = c.visit(schema, "#");
  return { top, rules: c.rules };
}

/** GBNF text of `rules` (which must include `root`) plus the shared JSON primitives. */
export function grammarText(rules: Map<string, string>): string {
  const lines = [...rules].map(([name, body]) => `${name} ::= ${body || '""'}`);
  for (const [name, body] of Object.entries(PRIMITIVES)) lines.push(`${name} ::= ${body}`);
  return lines.join("\n") + "\n";
}
