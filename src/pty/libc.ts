/**
 * The libc symbols the PTY shim uses, loaded once through `Deno.dlopen`, with the C
 * signature beside each. Nothing outside `src/pty/` touches these pointers.
 *
 * Linux (glibc) is the tested platform. The macOS route is written down in
 * `src/pty/README.md` and is untested.
 *
 * @module
 */

/** True on the platform this shim was verified on. */
export const IS_LINUX = Deno.build.os === "linux";

function libcPath(): string {
  if (Deno.build.os === "darwin") return "/usr/lib/libSystem.B.dylib";
  return "libc.so.6";
}

const SYMBOLS = {
  // int posix_openpt(int flags);
  posix_openpt: { parameters: ["i32"], result: "i32" },
  // int grantpt(int fd);
  grantpt: { parameters: ["i32"], result: "i32" },
  // int unlockpt(int fd);
  unlockpt: { parameters: ["i32"], result: "i32" },
  // int ptsname_r(int fd, char *buf, size_t buflen);
  ptsname_r: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  // int ioctl(int fd, unsigned long request, void *arg);  (variadic; fine on x86_64/aarch64 Linux)
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  // int fcntl(int fd, int cmd, long arg);  (variadic)
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  // ssize_t read(int fd, void *buf, size_t count);
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t write(int fd, const void *buf, size_t count);
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int close(int fd);
  close: { parameters: ["i32"], result: "i32" },
  // int kill(pid_t pid, int sig);
  kill: { parameters: ["i32", "i32"], result: "i32" },
  // pid_t waitpid(pid_t pid, int *wstatus, int options);
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout);  blocking: run off-thread
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout);  timeout 0 only
  poll_now: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32" },
  // int *__errno_location(void);  (macOS: int *__error(void))
  errno_location: {
    name: Deno.build.os === "darwin" ? "__error" : "__errno_location",
    parameters: [],
    result: "pointer",
  },
  // int sigemptyset(sigset_t *set);
  sigemptyset: { parameters: ["buffer"], result: "i32" },
  // int sigfillset(sigset_t *set);
  sigfillset: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_init(posix_spawn_file_actions_t *fa);
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *fa);
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_addopen(posix_spawn_file_actions_t *fa, int fd,
  //                                      const char *path, int oflag, mode_t mode);
  posix_spawn_file_actions_addopen: {
    parameters: ["buffer", "i32", "buffer", "i32", "u32"],
    result: "i32",
  },
  // int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fd, int newfd);
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *fa, int from);
  // (glibc >= 2.34; absent on macOS, where POSIX_SPAWN_CLOEXEC_DEFAULT does the job)
  posix_spawn_file_actions_addclosefrom_np: {
    parameters: ["buffer", "i32"],
    result: "i32",
    optional: true,
  },
  // int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *fa, const char *path);
  // (glibc >= 2.29; macOS 10.15+)
  posix_spawn_file_actions_addchdir_np: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnattr_init(posix_spawnattr_t *attr);
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_destroy(posix_spawnattr_t *attr);
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags);
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  // int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *set);
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *set);
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
  //                  const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);
  posix_spawnp: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // pid_t tcgetpgrp(int fd);  (works on a PTY master on Linux: the slave's foreground group)
  tcgetpgrp: { parameters: ["i32"], result: "i32" },
  // int tcgetattr(int fd, struct termios *t);
  tcgetattr: { parameters: ["i32", "buffer"], result: "i32" },
  // int tcsetattr(int fd, int optional_actions, const struct termios *t);
  tcsetattr: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  // int eventfd(unsigned int initval, int flags);  (Linux; elsewhere a pipe wakes the poller)
  eventfd: { parameters: ["u32", "i32"], result: "i32", optional: true },
  // int epoll_create1(int flags);  (Linux)
  epoll_create1: { parameters: ["i32"], result: "i32", optional: true },
  // int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);  (Linux)
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32", optional: true },
  // int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
  // blocking: run off-thread  (Linux)
  epoll_wait: {
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
  // int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *tmo,
  //           const sigset_t *sigmask);  (Linux; a sub-millisecond wait on the event loop)
  ppoll: { parameters: ["buffer", "u64", "buffer", "buffer"], result: "i32", optional: true },
  // int pipe(int pipefd[2]);
  pipe: { parameters: ["buffer"], result: "i32" },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout);  blocking, on the calling
  // thread: only for a process whose whole job is that wait (the `umad attach` relay)
  poll_here: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32" },
  // int socket(int domain, int type, int protocol);
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int connect(int fd, const struct sockaddr *addr, socklen_t len);
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbols. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let loaded: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

/** Loads libc once per process (it is never closed: a pending `poll` may still use it). */
export function libc(): Libc {
  loaded ??= Deno.dlopen(libcPath(), SYMBOLS);
  return loaded.symbols;
}

/** Constants with the same values on Linux and macOS. */
const POSIX = {
  F_GETFL: 3,
  F_SETFL: 4,
  POSIX_SPAWN_SETSIGDEF: 0x04,
  POSIX_SPAWN_SETSIGMASK: 0x08,
  WNOHANG: 1,
  EINTR: 4,
  EIO: 5,
  ESRCH: 3,
  ECHILD: 10,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  AF_UNIX: 1,
  SOCK_STREAM: 1,
} as const;

/** Constants that differ by platform. Linux values are verified; macOS values untested. */
export const C = Deno.build.os === "darwin"
  ? {
    ...POSIX,
    O_RDWR: 0x2,
    O_NOCTTY: 0x20000,
    O_CLOEXEC: 0x1000000,
    O_NONBLOCK: 0x4,
    TIOCSWINSZ: 0x80087467n,
    TIOCGWINSZ: 0x40087468n,
    POSIX_SPAWN_SETSID: 0x400, // macOS 10.15+
    POSIX_SPAWN_CLOEXEC_DEFAULT: 0x4000,
    EAGAIN: 35,
    EFD_CLOEXEC: 0,
    EFD_NONBLOCK: 0,
    EPOLL_CLOEXEC: 0, // no epoll on macOS: the poll() poller is used
    EPOLL_CTL_ADD: 0,
    EPOLL_CTL_DEL: 0,
    EPOLL_CTL_MOD: 0,
    EPOLLONESHOT: 0,
    EPOLL_EVENT_BYTES: 0,
    SIGSET_BYTES: 4,
    FILE_ACTIONS_BYTES: 8,
    SPAWNATTR_BYTES: 8,
    SOCK_CLOEXEC: 0, // macOS has none: FD_CLOEXEC is set after
    SUN_PATH_BYTES: 104,
    // struct sockaddr_un { u8 sun_len; u8 sun_family; char sun_path[104]; }
    SOCKADDR_FAMILY_BSD: true,
  }
  : {
    ...POSIX,
    O_RDWR: 0x2,
    O_NOCTTY: 0x100,
    O_CLOEXEC: 0x80000,
    O_NONBLOCK: 0x800,
    TIOCSWINSZ: 0x5414n,
    TIOCGWINSZ: 0x5413n,
    POSIX_SPAWN_SETSID: 0x80,
    POSIX_SPAWN_CLOEXEC_DEFAULT: 0,
    EAGAIN: 11,
    EFD_CLOEXEC: 0x80000,
    EFD_NONBLOCK: 0x800,
    EPOLL_CLOEXEC: 0x80000,
    EPOLL_CTL_ADD: 1,
    EPOLL_CTL_DEL: 2,
    EPOLL_CTL_MOD: 3,
    EPOLLONESHOT: 1 << 30,
    // struct epoll_event { uint32_t events; uint64_t data; }: packed on x86_64 only.
    EPOLL_EVENT_BYTES: Deno.build.arch === "x86_64" ? 12 : 16,
    SIGSET_BYTES: 128,
    FILE_ACTIONS_BYTES: 80,
    SPAWNATTR_BYTES: 336,
    SOCK_CLOEXEC: 0x80000,
    SUN_PATH_BYTES: 108,
    // struct sockaddr_un { sa_family_t sun_family (u16); char sun_path[108]; }
    SOCKADDR_FAMILY_BSD: false,
  };

const LINUX_SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
};

const DARWIN_SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGEMT: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGBUS: 10,
  SIGSEGV: 11,
  SIGSYS: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGURG: 16,
  SIGSTOP: 17,
  SIGTSTP: 18,
  SIGCONT: 19,
  SIGCHLD: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGIO: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGINFO: 29,
  SIGUSR1: 30,
  SIGUSR2: 31,
};

/** Signal name to number on this platform. */
export const SIGNALS: Readonly<Record<string, number>> = Deno.build.os === "darwin"
  ? DARWIN_SIGNALS
  : LINUX_SIGNALS;

/** Signal number to name on this platform (`SIG<n>` for unknown numbers). */
export function signalName(signo: number): string {
  for (const [name, n] of Object.entries(SIGNALS)) if (n === signo) return name;
  return `SIG${signo}`;
}

/** The calling thread's `errno` (read right after the failing call). */
export function errno(): number {
  const p = libc().errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** A NUL-terminated copy of a string for `char *` parameters. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * A NULL-terminated `char *[]` built from strings. The returned `keep` array holds the
 * strings' buffers: keep it reachable until the call that uses `array` returns.
 */
export function cStringArray(
  items: readonly string[],
): { array: BigUint64Array<ArrayBuffer>; keep: Uint8Array[] } {
  const keep = items.map(cString);
  const array = new BigUint64Array(items.length + 1);
  keep.forEach((buf, i) => {
    array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
  });
  return { array, keep };
}
