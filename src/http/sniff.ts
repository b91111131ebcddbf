/**
 * The first bytes of a connection decide its protocol (PROTOCOL.md, "HTTP on the same
 * socket"): an HTTP/1.1 request line starts with an uppercase method and a space; a
 * frame starts with its u32 little-endian length. Read as a length, the first four
 * bytes of every method below exceed 500 MiB, above the largest `--max-frame`, so four
 * bytes always decide.
 *
 * @module
 */

/** The methods whose request lines are served as HTTP. */
export const HTTP_METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"] as const;

/** What the first bytes of a connection are. */
export type Sniffed = "http" | "framed" | "undecided";

const PREFIXES = HTTP_METHODS.map((m) => new TextEncoder().encode(`${m} `).subarray(0, 4));

/**
 * Decides from a connection's first bytes whether it speaks HTTP or frames; with
 * fewer than four bytes that could still begin a request line, `"undecided"`.
 *
 * @example
 * ```ts
 * import { sniffProtocol } from "./sniff.ts";
 * const bytes = (s: string) => new TextEncoder().encode(s);
 * console.log(sniffProtocol(bytes("GET / HTTP/1.1\r\n"))); // "http"
 * console.log(sniffProtocol(bytes("PO")));                  // "undecided"
 * console.log(sniffProtocol(new Uint8Array([5, 0, 0, 0]))); // "framed"
 * ```
 */
export function sniffProtocol(head: Uint8Array): Sniffed {
  const n = Math.min(head.length, 4);
  let prefixOfOne = false;
  for (const p of PREFIXES) {
    let i = 0;
    while (i < n && head[i] === p[i]) i++;
    if (i < n) continue;
    if (n === 4) return "http";
    prefixOfOne = true;
  }
  return prefixOfOne ? "undecided" : "framed";
}
