/**
 * GBNF grammars (llama.cpp's grammar format, `grammars/README.md` of its source) checked
 * in TypeScript before llama.cpp sees them: syntax as llama.cpp parses it, every rule
 * referenced is defined, a `root` rule, no left recursion, bounded repetitions and
 * nesting. A grammar that passes is still handed to llama.cpp, which has the last word
 * (`llama_sampler_init_grammar` returning NULL becomes an error too); this check gives
 * the client a message that names the problem and keeps deep nesting away from
 * llama.cpp's recursive parser.
 *
 * @module
 */

/** A grammar that cannot be used; the message names the problem and where it is. */
export class GrammarError extends Error {
  /** Creates the error; the message names the problem. */
  constructor(message: string) {
    super(message);
    this.name = "GrammarError";
  }
}

/** Largest `{m,n}` bound llama.cpp accepts. */
export const MAX_REPETITION = 2000;
/** Deepest nesting of parentheses accepted (llama.cpp's parser recurses per level). */
export const MAX_NESTING = 64;
/** Most rules accepted. */
export const MAX_RULES = 10_000;

type Item =
  | { kind: "terminal"; nullable: false }
  | { kind: "ref"; name: string }
  | { kind: "group"; alts: Item[][] }
  | { kind: "repeat"; item: Item; min: number };

/** A parsed grammar: rule name → alternatives, each a sequence of items. */
interface Parsed {
  rules: Map<string, Item[][]>;
}

const isWordChar = (c: string) => /[a-zA-Z0-9-]/.test(c);

class Parser {
  pos = 0;
  depth = 0;
  readonly rules = new Map<string, Item[][]>();
  constructor(readonly src: string) {}

  fail(message: string): never {
    const before = this.src.slice(0, this.pos);
    const line = before.split("\n").length;
    const col = this.pos - before.lastIndexOf("\n");
    const near = JSON.stringify(this.src.slice(this.pos, this.pos + 20));
    throw new GrammarError(
      `Invalid grammar at line ${line}, column ${col} (near ${near}): ${message}`,
    );
  }
  get c(): string {
    return this.src[this.pos] ?? "";
  }
  space(newlineOk: boolean) {
    while (this.pos < this.src.length) {
      const c = this.c;
      if (c === "#") {
        while (this.pos < this.src.length && this.c !== "\n" && this.c !== "\r") this.pos++;
      } else if (c === " " || c === "\t" || (newlineOk && (c === "\n" || c === "\r"))) {
        this.pos++;
      } else break;
    }
  }
  name(): string {
    const start = this.pos;
    while (isWordChar(this.c)) this.pos++;
    if (this.pos === start) this.fail("expecting a rule name (letters, digits and -)");
    return this.src.slice(start, this.pos);
  }
  int(): number {
    const start = this.pos;
    while (/[0-9]/.test(this.c)) this.pos++;
    if (this.pos === start) this.fail("expecting an integer");
    return Number(this.src.slice(start, this.pos));
  }
  /** One character of a literal or class, escapes decoded (as llama.cpp's parse_char). */
  char() {
    if (this.c === "\\") {
      this.pos++;
      const e: string = this.src[this.pos] ?? "";
      const hex = (n: number) => {
        const h = this.src.slice(this.pos + 1, this.pos + 1 + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(h)) this.fail(`expecting ${n} hex digits`);
        this.pos += n + 1;
        const cp = parseInt(h, 16);
        if (cp > 0x10ffff) this.fail("code point out of range");
      };
      if (e === "x") return hex(2);
      if (e === "u") return hex(4);
      if (e === "U") return hex(8);
      if ('tnr\\"[]'.includes(e) && e !== "") {
        this.pos++;
        return;
      }
      this.fail(`unknown escape "\\${e}"`);
    }
    if (this.pos >= this.src.length) this.fail("unexpected end of input");
    const cp = this.src.codePointAt(this.pos)!;
    this.pos += cp > 0xffff ? 2 : 1;
  }
  rule() {
    const name = this.name();
    this.space(false);
    if (!this.src.startsWith("::=", this.pos)) this.fail(`expecting "::=" after "${name}"`);
    this.pos += 3;
    this.space(true);
    const alts = this.alternates(false);
    if (this.rules.has(name)) {
      // llama.cpp keeps the last definition; say so instead of guessing.
      this.fail(`rule "${name}" is defined twice`);
    }
    this.rules.set(name, alts);
    if (this.rules.size > MAX_RULES) this.fail(`more than ${MAX_RULES} rules`);
    if (this.c === "\r") this.pos += this.src[this.pos + 1] === "\n" ? 2 : 1;
    else if (this.c === "\n") this.pos++;
    else if (this.pos < this.src.length) this.fail("expecting a newline or the end");
    this.space(true);
  }
  alternates(nested: boolean): Item[][] {
    const alts = [this.sequence(nested)];
    while (this.c === "|") {
      this.pos++;
      this.space(true);
      alts.push(this.sequence(nested));
    }
    return alts;
  }
  sequence(nested: boolean): Item[] {
    const items: Item[] = [];
    const repeat = (min: number, max: number) => {
      const last = items.pop();
      if (!last) this.fail("expecting an item before */+/?/{");
      if (min > MAX_REPETITION || max > MAX_REPETITION && max !== Infinity) {
        this.fail(`repetition bound over ${MAX_REPETITION}`);
      }
      items.push({ kind: "repeat", item: last, min });
    };
    while (this.pos < this.src.length) {
      const c = this.c;
      if (c === '"') {
        this.pos++;
        let empty = true;
        while (this.c !== '"') {
          if (this.pos >= this.src.length) this.fail("unterminated string literal");
          this.char();
          empty = false;
        }
        this.pos++;
        // An empty literal matches nothing: it is an empty sequence.
        items.push(empty ? { kind: "group", alts: [[]] } : { kind: "terminal", nullable: false });
      } else if (c === "[") {
        this.pos++;
        if (this.c === "^") this.pos++;
        let n = 0;
        while (this.c !== "]") {
          if (this.pos >= this.src.length) this.fail("unterminated character class");
          this.char();
          if (this.c === "-" && this.src[this.pos + 1] !== "]") {
            this.pos++;
            if (this.pos >= this.src.length) this.fail("unterminated character range");
            this.char();
          }
          n++;
        }
        if (n === 0) this.fail("empty character class");
        this.pos++;
        items.push({ kind: "terminal", nullable: false });
      } else if (c === "<" || c === "!") {
        if (c === "!") this.pos++;
        if (this.c !== "<") this.fail('expecting "<" for a token');
        const end = this.src.indexOf(">", this.pos);
        if (end < 0) this.fail('expecting ">" to close a token');
        this.pos = end + 1;
        items.push({ kind: "terminal", nullable: false });
      } else if (isWordChar(c)) {
        items.push({ kind: "ref", name: this.name() });
      } else if (c === "(") {
        this.pos++;
        if (++this.depth > MAX_NESTING) this.fail(`parentheses nested deeper than ${MAX_NESTING}`);
        this.space(true);
        const alts = this.alternates(true);
        if (this.c !== ")") this.fail('expecting ")"');
        this.pos++;
        this.depth--;
        items.push({ kind: "group", alts });
      } else if (c === ".") {
        this.pos++;
        items.push({ kind: "terminal", nullable: false });
      } else if (c === "*" || c === "+" || c === "?") {
        this.pos++;
        repeat(c === "+" ? 1 : 0, c === "?" ? 1 : Infinity);
      } else if (c === "{") {
        this.pos++;
        this.space(nested);
        const min = this.int();
        this.space(nested);
        let max = min;
        if (this.c === ",") {
          this.pos++;
          this.space(nested);
          max = /[0-9]/.test(this.c) ? this.int() : Infinity;
          this.space(nested);
        }
        if (this.c !== "}") this.fail('expecting "}"');
        this.pos++;
        if (max < min) this.fail(`repetition {${min},${max}} has max below min`);
        repeat(min, max);
      } else break;
      this.space(nested);
    }
    return items;
  }
}

function nullableItem(item: Item, nullable: Map<string, boolean>): boolean {
  switch (item.kind) {
    case "terminal":
      return false;
    case "ref":
      return nullable.get(item.name) ?? false;
    case "group":
      return item.alts.some((seq) => seq.every((i) => nullableItem(i, nullable)));
    case "repeat":
      return item.min === 0 || nullableItem(item.item, nullable);
  }
}

/** Rules a sequence may start with (skipping items that can be empty). */
function leftRefs(seq: Item[], nullable: Map<string, boolean>, out: Set<string>) {
  for (const item of seq) {
    if (item.kind === "ref") out.add(item.name);
    else if (item.kind === "group") { for (const s of item.alts) leftRefs(s, nullable, out); }
    else if (item.kind === "repeat") leftRefs([item.item], nullable, out);
    if (!nullableItem(item, nullable)) return;
  }
}

function collectRefs(items: Item[], out: Set<string>) {
  for (const item of items) {
    if (item.kind === "ref") out.add(item.name);
    else if (item.kind === "group") { for (const s of item.alts) collectRefs(s, out); }
    else if (item.kind === "repeat") collectRefs([item.item], out);
  }
}

/**
 * Checks a GBNF grammar; returns it unchanged when it is usable, else throws
 * {@linkcode GrammarError} naming the problem.
 *
 * @example
 * ```ts
 * import { checkGrammar } from "./grammar.ts";
 * checkGrammar('root ::= "yes" | "no"');
 * try {
 *   checkGrammar("root ::= expr\nexpr ::= expr \"+\" term");
 * } catch (e) {
 *   console.log((e as Error).message); // ...left recursion...
 * }
 * ```
 */
export function checkGrammar(source: string): string {
  const p = new Parser(source);
  p.space(true);
  while (p.pos < source.length) p.rule();
  const parsed: Parsed = { rules: p.rules };
  if (!parsed.rules.has("root")) throw new GrammarError('Invalid grammar: no "root" rule');
  for (const [name, alts] of parsed.rules) {
    const refs = new Set<string>();
    for (const seq of alts) collectRefs(seq, refs);
    for (const r of refs) {
      if (!parsed.rules.has(r)) {
        throw new GrammarError(`Invalid grammar: rule "${name}" refers to undefined rule "${r}"`);
      }
    }
  }
  // Nullable rules by fixpoint, then a cycle among "may start with" edges is left recursion.
  const nullable = new Map<string, boolean>();
  for (let changed = true; changed;) {
    changed = false;
    for (const [name, alts] of parsed.rules) {
      if (nullable.get(name)) continue;
      if (alts.some((seq) => seq.every((i) => nullableItem(i, nullable)))) {
        nullable.set(name, true);
        changed = true;
      }
    }
  }
  const edges = new Map<string, Set<string>>();
  for (const [name, alts] of parsed.rules) {
    const out = new Set<string>();
    for (const seq of alts) leftRefs(seq, nullable, out);
    edges.set(name, out);
  }
  const state = new Map<string, 1 | 2>(); // 1 in progress, 2 done
  for (const start of parsed.rules.keys()) {
    if (state.has(start)) continue;
    // Iterative DFS: a long chain of rules must not overflow our stack either.
    const stack: [string, Iterator<string>][] = [[start, edges.get(start)!.values()]];
    state.set(start, 1);
    while (stack.length) {
      const [name, it] = stack[stack.length - 1];
      const next = it.next();
      if (next.done) {
        state.set(name, 2);
        stack.pop();
        continue;
      }
      const s = state.get(next.value);
      if (s === 1) {
        throw new GrammarError(
          `Invalid grammar: rule "${next.value}" is left-recursive (llama.cpp cannot run it); ` +
            `rewrite it with repetition, e.g. expr ::= term ("+" term)*`,
        );
      }
      if (s === undefined) {
        state.set(next.value, 1);
        stack.push([next.value, edges.get(next.value)!.values()]);
      }
    }
  }
  return source;
}
