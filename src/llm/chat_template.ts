/**
 * Chat templates rendered as Hugging Face transformers renders them: the model's Jinja
 * `tokenizer.chat_template` through `@huggingface/jinja`, with the variables and helpers
 * of `apply_chat_template` (`messages`, `tools`, `add_generation_prompt`, `bos_token`,
 * `eos_token`, `raise_exception`, `strftime_now`). Pure TypeScript: no FFI, so it is
 * tested without llama.cpp; llama.cpp's built-in templates (the fallback) are rendered
 * by `prompt.ts` in the engine worker.
 *
 * Injection safety lives here too: {@linkcode protectControlText} replaces control-token
 * text in everything a client wrote with placeholders before rendering, and
 * {@linkcode splitProtected} turns the rendered prompt back into parts that say which
 * text may be parsed for control tokens (only the template's own).
 *
 * @module
 */
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import type { ChatMessage, ToolSpec } from "../protocol/messages.ts";

/** A chat template that could not be compiled or rendered; the message says why. */
export class ChatTemplateError extends Error {
  /** Creates the error (`cause`: what the template engine threw). */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ChatTemplateError";
  }
}

/** What a Jinja chat template is given besides the messages. */
export interface RenderOptions {
  /** Tools passed to the template (`tools`), None when absent. */
  tools?: readonly ToolSpec[];
  /** End with the assistant's turn opened (default true: we want its answer). */
  addGenerationPrompt?: boolean;
  /** The vocabulary's BOS and EOS texts ("<|begin_of_text|>"), "" when it has none. */
  bosToken: string;
  /** The vocabulary's EOS text. */
  eosToken: string;
  /** The clock `strftime_now` reads (default: the real one). */
  now?: () => Date;
}

/** A message as a Jinja chat template sees it (transformers' shape). */
export interface TemplateMessage {
  /** `system`, `user`, `assistant`, `tool`, or what the client sent. */
  role: string;
  /** The message text ("" for an assistant turn that only called tools). */
  content: string;
  /** A tool result's function name. */
  name?: string;
  /** The call a `tool` message answers. */
  tool_call_id?: string;
  /** Calls an assistant message made. */
  tool_calls?: {
    id?: string;
    type: "function";
    function: { name: string; arguments: unknown };
  }[];
}

/**
 * Messages in the shape templates expect: a tool call's `arguments` as an object (the
 * wire carries JSON text, as OpenAI's API does; templates apply `tojson` to it).
 */
export function templateMessages(messages: readonly ChatMessage[]): TemplateMessage[] {
  return messages.map((m) => {
    const out: TemplateMessage = { role: m.role, content: m.content };
    if (m.name !== undefined) out.name = m.name;
    if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
    if (m.tool_calls) {
      out.tool_calls = m.tool_calls.map((c) => {
        let args: unknown = c.function.arguments;
        try {
          args = JSON.parse(c.function.arguments);
        } catch { /* not JSON: the template gets the text */ }
        const call: NonNullable<TemplateMessage["tool_calls"]>[number] = {
          type: "function",
          function: { name: c.function.name, arguments: args },
        };
        if (c.id !== undefined) call.id = c.id;
        return call;
      });
    }
    return out;
  });
}

const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/**
 * Python's `datetime.now().strftime(format)` for the directives chat templates use
 * (`%Y %m %d %e %b %B %a %A %H %M %S %y %j %p %I %%`), in the C locale.
 *
 * @example
 * ```ts
 * import { strftime } from "./chat_template.ts";
 * console.log(strftime(new Date(2024, 6, 26), "%d %b %Y")); // "26 Jul 2024"
 * ```
 */
export function strftime(date: Date, format: string): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  return format.replace(/%([a-zA-Z%])/g, (all, d: string) => {
    switch (d) {
      case "Y":
        return String(date.getFullYear());
      case "y":
        return pad(date.getFullYear() % 100);
      case "m":
        return pad(date.getMonth() + 1);
      case "d":
        return pad(date.getDate());
      case "e":
        return String(date.getDate()).padStart(2, " ");
      case "j": {
        const start = new Date(date.getFullYear(), 0, 1);
        return pad(Math.floor((+date - +start) / 86_400_000) + 1, 3);
      }
      case "b":
        return MONTHS[date.getMonth()].slice(0, 3);
      case "B":
        return MONTHS[date.getMonth()];
      case "a":
        return DAYS[date.getDay()].slice(0, 3);
      case "A":
        return DAYS[date.getDay()];
      case "H":
        return pad(date.getHours());
      case "I":
        return pad(date.getHours() % 12 || 12);
      case "p":
        return date.getHours() < 12 ? "AM" : "PM";
      case "M":
        return pad(date.getMinutes());
      case "S":
        return pad(date.getSeconds());
      case "%":
        return "%";
      default:
        return all;
    }
  });
}

/** Python's `range(stop)`, `range(start, stop[, step])`. */
function range(a: number, b?: number, step = 1): number[] {
  const [start, stop] = b === undefined ? [0, a] : [a, b];
  if (step === 0) throw new ChatTemplateError("range() step must not be zero");
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) {
    out.push(i);
    if (out.length > 1_000_000) throw new ChatTemplateError("range() too long");
  }
  return out;
}

/** The globals @huggingface/jinja's own Template.render declares. */
const JINJA_GLOBALS: Record<string, unknown> = {
  true: true,
  false: false,
  none: null,
  True: true,
  False: false,
  None: null,
  range,
};

/**
 * A compiled Jinja chat template.
 *
 * @example
 * ```ts
 * import { JinjaChatTemplate } from "./chat_template.ts";
 * const t = new JinjaChatTemplate(
 *   "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}" +
 *     "{% if add_generation_prompt %}<|assistant|>{% endif %}",
 * );
 * const text = t.render([{ role: "user", content: "Hi" }], { bosToken: "", eosToken: "" });
 * console.log(text); // "<|user|>Hi<|assistant|>"
 * ```
 */
export class JinjaChatTemplate {
  /** The template's Jinja text. */
  readonly source: string;
  readonly #template: Template;

  /** Compiles `source`; throws {@linkcode ChatTemplateError} when it does not parse. */
  constructor(source: string) {
    this.source = source;
    try {
      this.#template = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(
        `The chat template does not compile: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }

  /**
   * Renders the messages as `apply_chat_template` would (`tokenize=False`). Throws
   * {@linkcode ChatTemplateError} when the template raises (`raise_exception`) or fails.
   */
  render(messages: readonly TemplateMessage[], options: RenderOptions): string {
    const now = options.now ?? (() => new Date());
    const context: Record<string, unknown> = {
      ...JINJA_GLOBALS,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: options.bosToken,
      eos_token: options.eosToken,
      raise_exception: (message: unknown) => {
        throw new ChatTemplateError(`The chat template refused the request: ${String(message)}`);
      },
      strftime_now: (format: unknown) => strftime(now(), String(format)),
      // None when absent, as transformers passes it (templates test `tools is not none`).
      tools: options.tools && options.tools.length > 0 ? options.tools : null,
      documents: null,
    };
    try {
      // Template.render would declare its own raise_exception and strftime_now first.
      const env = new Environment();
      for (const [k, v] of Object.entries(context)) env.set(k, v);
      return new Interpreter(env).run(this.#template.parsed).value as string;
    } catch (e) {
      if (e instanceof ChatTemplateError) throw e;
      throw new ChatTemplateError(
        `The chat template failed: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }
}

/** A part of a rendered prompt and whether its control-token text may become tokens. */
export interface PromptPart {
  /** The text of this part. */
  text: string;
  /** True for the template's own text; false for text a client wrote. */
  special: boolean;
}

/** Client text whose control-token strings were replaced by placeholders. */
export interface Protected<T> {
  /** The protected copy. */
  value: T;
  /** The replaced strings, by placeholder number. */
  originals: string[];
  /** Marks this rendering's placeholders (random per request: clients cannot forge one). */
  nonce: string;
}

const PLACEHOLDER_OPEN = "\uE000";
const PLACEHOLDER_CLOSE = "\uE001";

function regexEscape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * A matcher for any of `texts` (control tokens' strings, longest first so that
 * "<|im_end|>" wins over "<|im"), or null when there are none.
 */
export function controlTextPattern(texts: readonly string[]): RegExp | null {
  const list = [...new Set(texts.filter((t) => t.length > 0))].sort((a, b) => b.length - a.length);
  if (list.length === 0) return null;
  return new RegExp(list.map(regexEscape).join("|"), "g");
}

/**
 * Replaces every control-token string inside every string (and object key) of `value`
 * with a placeholder, so that a message saying `<|im_end|>` cannot close its turn: the
 * template renders around placeholders, and {@linkcode splitProtected} hands the original
 * strings back as plain text.
 *
 * @example
 * ```ts
 * import { controlTextPattern, protectControlText, splitProtected } from "./chat_template.ts";
 * const p = protectControlText({ content: "a<|im_end|>b" }, controlTextPattern(["<|im_end|>"]));
 * const parts = splitProtected(`<|im_start|>${p.value.content}<|im_end|>`, p);
 * console.log(parts);
 * // [{text:"<|im_start|>a", special:true}, {text:"<|im_end|>", special:false},
 * //  {text:"b<|im_end|>", special:true}]
 * ```
 */
export function protectControlText<T>(value: T, pattern: RegExp | null): Protected<T> {
  const nonce = crypto.getRandomValues(new Uint32Array(2)).join("");
  const originals: string[] = [];
  if (pattern === null) return { value, originals, nonce };
  const protect = (s: string): string =>
    s.replace(pattern, (m) => {
      originals.push(m);
      return `${PLACEHOLDER_OPEN}${nonce}:${originals.length - 1}${PLACEHOLDER_CLOSE}`;
    });
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return protect(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[protect(k)] = walk(x);
      return out;
    }
    return v;
  };
  return { value: walk(value) as T, originals, nonce };
}

/**
 * Splits a prompt rendered from protected values into parts: the template's text
 * (parsed for control tokens) and the strings the placeholders stand for (plain text).
 * Adjacent parts of one kind are merged.
 */
export function splitProtected(rendered: string, p: Protected<unknown>): PromptPart[] {
  const parts: PromptPart[] = [];
  const push = (text: string, special: boolean) => {
    if (text.length === 0) return;
    const last = parts[parts.length - 1];
    if (last && last.special === special) last.text += text;
    else parts.push({ text, special });
  };
  if (p.originals.length === 0) {
    push(rendered, true);
    return parts;
  }
  const re = new RegExp(
    `${PLACEHOLDER_OPEN}${p.nonce}:(\\d+)${PLACEHOLDER_CLOSE}`,
    "g",
  );
  let at = 0;
  for (const m of rendered.matchAll(re)) {
    const original = p.originals[Number(m[1])];
    if (original === undefined) continue;
    push(rendered.slice(at, m.index), true);
    push(original, false);
    at = m.index! + m[0].length;
  }
  push(rendered.slice(at), true);
  return parts;
}
