/**
 * The cells of a unified KV cache as llama.cpp allocates them, mirrored in TypeScript:
 * which sequence holds which cell, how many cells are free, and how far the cells in use
 * reach (`n_kv`, the span every row of a decode scans). The scheduler admits streams by
 * free cells, shares prefixes between sequences (`llama_memory_seq_cp` adds a sequence
 * to cells without copying them) and predicts a step's attention cost from the span.
 *
 * Placement follows `llama_kv_cache::find_slot` (non-contiguous slots) and `seq_rm` of
 * llama.cpp v0.4.0: a search from the head for empty cells, restarted from cell 0 when
 * enough cells are free before the head; the head moves past the last cell placed, and
 * back to the first cell a removal empties. Only the cost prediction depends on placement
 * being mirrored exactly; free-cell counts hold whatever llama.cpp does.
 *
 * @module
 */

/** llama.cpp pads the span it attends over to a multiple of this. */
export const KV_PAD = 256;

/**
 * One unified cache of `size` cells.
 *
 * @example
 * ```ts
 * import { KvCells } from "./kv_cells.ts";
 * const kv = new KvCells(1024);
 * kv.place([0, 0, 0]); // a 3-token prompt chunk of sequence 0
 * kv.copy(0, 1, 2); // sequence 1 shares its first 2 tokens
 * console.log(kv.used, kv.length(1)); // 3 2
 * kv.remove(0); // the shared cells stay, held by sequence 1
 * console.log(kv.used); // 2
 * ```
 */
export class KvCells {
  /** Cells in the cache (llama_n_ctx). */
  readonly size: number;
  /** Sequences holding each cell. */
  #refs: Uint16Array;
  /** Each sequence's cells, by position. */
  #cells = new Map<number, number[]>();
  #used = 0;
  #head = 0;
  /** One past the highest cell in use (0 when empty). */
  #top = 0;

  /** An empty cache of `size` cells. */
  constructor(size: number) {
    if (!(Number.isInteger(size) && size > 0)) throw new RangeError(`size ${size}`);
    this.size = size;
    this.#refs = new Uint16Array(size);
  }

  /** Cells holding at least one sequence. */
  get used(): number {
    return this.#used;
  }

  /** Cells no sequence holds. */
  get free(): number {
    return this.size - this.#used;
  }

  /** The span a decode attends over now: llama.cpp's `n_kv`. */
  get span(): number {
    return spanOf(this.#top, this.size);
  }

  /** The span after `tokens` more cells are placed (an estimate: placed past the top). */
  spanAfter(tokens: number): number {
    const free = this.size - this.#used;
    // The search restarts low when the head is far past the cells in use.
    const holesBelowTop = this.#top - this.#used;
    const over = Math.max(0, tokens - Math.min(free, holesBelowTop));
    return spanOf(Math.min(this.size, this.#top + over), this.size);
  }

  /** Positions a sequence holds (0 when it holds none). */
  length(seq: number): number {
    return this.#cells.get(seq)?.length ?? 0;
  }

  /** The sequences holding any cell. */
  sequences(): number[] {
    return [...this.#cells.keys()];
  }

  /**
   * Places one decode call's tokens, in batch order: `seqs[i]` is the sequence of row i,
   * which takes that sequence's next position. False (nothing placed) when fewer cells
   * are free than rows: llama.cpp's "no KV slot".
   */
  place(seqs: readonly number[]): boolean {
    const n = seqs.length;
    if (n === 0) return true;
    if (n > this.size - this.#used) return false;
    let head = this.#head;
    if (head > this.#used + 2 * n) head = 0;
    const idxs: number[] = [];
    while (idxs.length < n) {
      if (head >= this.size) head = 0;
      if (this.#refs[head] === 0) idxs.push(head);
      head++;
    }
    for (let i = 0; i < n; i++) {
      const c = idxs[i];
      this.#refs[c] = 1;
      this.#cellsOf(seqs[i]).push(c);
      if (c + 1 > this.#top) this.#top = c + 1;
    }
    this.#used += n;
    this.#head = idxs[n - 1] + 1;
    return true;
  }

  /** `dst` (empty) shares the first `n` positions of `src`: no cells are taken. */
  copy(src: number, dst: number, n: number): void {
    const from = this.#cells.get(src) ?? [];
    if (n > from.length) throw new RangeError(`seq ${src} holds ${from.length} < ${n} positions`);
    if (this.length(dst) !== 0) throw new RangeError(`seq ${dst} is not empty`);
    if (n === 0) return;
    const to = from.slice(0, n);
    for (const c of to) this.#refs[c]++;
    this.#cells.set(dst, to);
  }

  /** Drops positions `from` onwards of a sequence; cells no sequence holds become free. */
  remove(seq: number, from = 0): void {
    const cells = this.#cells.get(seq);
    if (!cells || from >= cells.length) return;
    let firstFreed = this.size;
    for (let p = Math.max(0, from); p < cells.length; p++) {
      const c = cells[p];
      if (--this.#refs[c] === 0) {
        this.#used--;
        // llama.cpp scans cells in index order and keeps the lowest one emptied.
        if (c < firstFreed) firstFreed = c;
      }
    }
    cells.length = Math.max(0, from);
    if (cells.length === 0) this.#cells.delete(seq);
    if (firstFreed < this.#head) this.#head = firstFreed;
    while (this.#top > 0 && this.#refs[this.#top - 1] === 0) this.#top--;
  }

  /** Cells held by `seq` and by no other sequence (what removing it would free). */
  ownCells(seq: number): number {
    let n = 0;
    for (const c of this.#cells.get(seq) ?? []) if (this.#refs[c] === 1) n++;
    return n;
  }

  #cellsOf(seq: number): number[] {
    let cells = this.#cells.get(seq);
    if (!cells) this.#cells.set(seq, cells = []);
    return cells;
  }
}

function spanOf(top: number, size: number): number {
  return Math.min(size, Math.max(KV_PAD, Math.ceil(top / KV_PAD) * KV_PAD));
}
