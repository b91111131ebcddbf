/**
 * A request's prompt as tokens: chat messages through the chat template, or a raw
 * prompt. Runs in the engine worker, beside the model's vocabulary.
 *
 * No template injection: control-token text that a client wrote (in messages, tool
 * specs, roles) is tokenized as text; only the template's own text is parsed for control
 * tokens (see `chat_template.ts`). The rendered prompt is cut at the template's control
 * tokens as llama.cpp's tokenizer cuts a string at every control token (longest first,
 * whitespace eaten beside tokens marked lstrip/rstrip), and each stretch of text between
 * them, template and client text together, is tokenized in one call without parsing
 * specials: without control text from clients the tokens are exactly those of the whole
 * rendering tokenized with specials, as llama-server and transformers tokenize it.
 *
 * @module
 */
import {
  ChatTemplateError,
  controlTextPattern,
  JinjaChatTemplate,
  type PromptPart,
  protectControlText,
  splitProtected,
  templateMessages,
} from "./chat_template.ts";
import type { ControlToken, LlamaModel } from "./llama.ts";
import type { ChatMessage, ToolSpec } from "../protocol/messages.ts";

export { ChatTemplateError } from "./chat_template.ts";

/** `--chat-template`: a Jinja template's text (read from FILE), or a built-in's name. */
export type ChatTemplateOverride =
  | { kind: "jinja"; source: string; name: string }
  | { kind: "builtin"; name: string };

/** What a prompt is made from. */
export interface PromptInput {
  /** A raw prompt (tokenized as given). */
  prompt?: string;
  /** Chat messages (rendered with the template). */
  messages?: readonly ChatMessage[];
  /** Tools shown to the template. */
  tools?: readonly ToolSpec[];
  /** Raw prompts only: parse control-token text (the default, as llama-server does). */
  special: boolean;
}

/** Which template renders chat messages, as `hello.model` reports it. */
export interface TemplateChoice {
  /** "model" (the model's own), "file:PATH" (`--chat-template FILE`), or a built-in's name. */
  name: string;
  /** "jinja" (@huggingface/jinja, as transformers renders) or "llama.cpp" (its built-ins). */
  renderer: "jinja" | "llama.cpp";
}

/** Turns requests into prompt tokens for one model. */
export class PromptBuilder {
  /** The model whose vocabulary tokenizes. */
  readonly model: LlamaModel;
  /** The template that renders messages. */
  readonly choice: TemplateChoice;
  /** Why the model's own template is not used, when it is not; null otherwise. */
  readonly fallbackReason: string | null = null;
  readonly #jinja: JinjaChatTemplate | null = null;
  /** The template text or built-in name llama.cpp renders with. */
  readonly #builtin: string | null = null;
  #pattern: RegExp | null | undefined;

  /** Picks the template: `override`, else the model's own (Jinja, else llama.cpp's reading of it), else llama.cpp's chatml. Throws ChatTemplateError for an unknown built-in name or a template that does not compile. */
  constructor(model: LlamaModel, override?: ChatTemplateOverride) {
    this.model = model;
    if (override?.kind === "jinja") {
      this.#jinja = new JinjaChatTemplate(override.source);
      this.choice = { name: override.name, renderer: "jinja" };
      return;
    }
    if (override?.kind === "builtin") {
      const known = model.builtinTemplates();
      if (!known.includes(override.name)) {
        throw new ChatTemplateError(
          `Unknown chat template "${override.name}": give a Jinja file or one of llama.cpp's ` +
            `built-in templates: ${known.join(", ")}`,
        );
      }
      this.#builtin = override.name;
      this.choice = { name: override.name, renderer: "llama.cpp" };
      return;
    }
    const own = model.chatTemplate;
    if (own) {
      try {
        this.#jinja = new JinjaChatTemplate(own);
        this.choice = { name: "model", renderer: "jinja" };
        return;
      } catch (e) {
        this.fallbackReason = (e as Error).message;
      }
      // llama.cpp recognizes many templates by their text even where Jinja fails.
      try {
        model.applyChatTemplate([{ role: "user", content: "x" }], own);
        this.#builtin = own;
        this.choice = { name: "model", renderer: "llama.cpp" };
        return;
      } catch { /* not one llama.cpp knows either */ }
    } else {
      this.fallbackReason = "the model has no chat template";
    }
    this.#builtin = "chatml";
    this.choice = { name: "chatml", renderer: "llama.cpp" };
  }

  /** Control-token strings of the vocabulary as one pattern (built on first use). */
  get #controls(): RegExp | null {
    if (this.#pattern === undefined) {
      this.#pattern = controlTextPattern(this.model.controlTokens().map((t) => t.text));
    }
    return this.#pattern;
  }

  /** The chat prompt as text, control-token text of clients protected (for tests and logs). */
  renderParts(messages: readonly ChatMessage[], tools?: readonly ToolSpec[]): PromptPart[] {
    const m = this.model;
    const p = protectControlText({ messages: templateMessages(messages), tools }, this.#controls);
    let rendered: string;
    if (this.#jinja) {
      rendered = this.#jinja.render(p.value.messages, {
        tools: p.value.tools,
        bosToken: m.bos >= 0 ? m.tokenText(m.bos) : "",
        eosToken: m.eos >= 0 ? m.tokenText(m.eos) : "",
      });
    } else {
      rendered = m.applyChatTemplate(
        p.value.messages.map((x) => ({ role: x.role, content: x.content })),
        this.#builtin!,
      );
    }
    return splitProtected(rendered, p);
  }

  /**
   * The prompt's tokens. Chat: rendered, tokenized without adding specials (the
   * template writes them), then BOS prepended once if the vocabulary asks for it and the
   * template did not write it (llama-server's rule). Raw: BOS as the vocabulary asks, and
   * control-token text parsed unless `special` is false. Throws
   * {@linkcode ChatTemplateError} when the template refuses the messages.
   */
  build(input: PromptInput): Int32Array {
    const m = this.model;
    if (input.messages === undefined) return m.tokenize(input.prompt ?? "", true, input.special);
    const fragments = cutAtControlTokens(
      this.renderParts(input.messages, input.tools),
      m.controlTokens(),
    );
    const chunks = fragments.map((f) =>
      typeof f === "number" ? Int32Array.of(f) : m.tokenize(f, false, false)
    );
    const addBos = m.addBos && m.bos >= 0 && !(chunks[0]?.[0] === m.bos);
    let n = addBos ? 1 : 0;
    for (const c of chunks) n += c.length;
    const out = new Int32Array(n);
    let at = 0;
    if (addBos) out[at++] = m.bos;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/** C's isspace: what llama.cpp strips beside lstrip/rstrip tokens. */
const SPACE = /[ \t\n\v\f\r]/;

/**
 * The prompt as text fragments and control-token ids: the template's parts cut at every
 * control token (each token in turn, longest first, as llama.cpp's tokenizer does), client
 * parts never; adjacent text merged; whitespace removed beside lstrip/rstrip tokens.
 */
export function cutAtControlTokens(
  parts: readonly PromptPart[],
  controls: readonly ControlToken[],
): (string | number)[] {
  type Piece = { text: string; cut: boolean } | ControlToken;
  let pieces: Piece[] = parts.map((p) => ({ text: p.text, cut: p.special }));
  for (const token of controls) {
    const next: Piece[] = [];
    for (const piece of pieces) {
      if (!("cut" in piece) || !piece.cut || !piece.text.includes(token.text)) {
        next.push(piece);
        continue;
      }
      const split = piece.text.split(token.text);
      split.forEach((text, i) => {
        if (i > 0) next.push(token);
        if (text) next.push({ text, cut: true });
      });
    }
    pieces = next;
  }
  const out: (string | number)[] = [];
  let stripNext = false;
  for (const piece of pieces) {
    if ("cut" in piece) {
      let text = piece.text;
      if (stripNext) {
        let i = 0;
        while (i < text.length && SPACE.test(text[i])) i++;
        text = text.slice(i);
        if (text.length === 0) continue; // all eaten: keep eating into the next text
        stripNext = false;
      }
      const last = out.length - 1;
      if (typeof out[last] === "string") out[last] += text;
      else out.push(text);
      continue;
    }
    stripNext = false;
    const last = out.length - 1;
    if (piece.lstrip && typeof out[last] === "string") {
      const t = (out[last] as string).replace(/[ \t\n\v\f\r]+$/, "");
      if (t) out[last] = t;
      else out.pop();
    }
    out.push(piece.id);
    stripNext = piece.rstrip;
  }
  return out;
}
