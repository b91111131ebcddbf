// Linux /proc readers shared by the tests and the benches: one parser of `stat` lines,
// and what the tests and benches read from them (children, zombies, CPU time).

/**
 * The fields of a `/proc/.../stat` line after "(comm)": index 0 is field 3 (state), so
 * field n of proc(5) is at index n - 3. Null when the process (or thread) is gone.
 */
export function statFields(path: string): string[] | null {
  try {
    const stat = Deno.readTextFileSync(path);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** The processes whose parent is `ppid`, with their state letter ("Z": a zombie). */
export function childrenOf(ppid: number): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const f = statFields(`/proc/${e.name}/stat`);
    if (f && Number(f[1]) === ppid) out.push({ pid: Number(e.name), state: f[0] });
  }
  return out;
}

/** User + system CPU time (ms) of a process, or of one thread (`/proc/P/task/T/stat`). */
export function cpuMsOf(statPath: string): number {
  const f = statFields(statPath);
  return f ? (Number(f[11]) + Number(f[12])) * 10 : NaN; // utime + stime in 100 Hz ticks
}
