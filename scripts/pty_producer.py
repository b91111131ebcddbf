# Output producer for the terminal benchmark's wait part (bench_pty_programs.ts): about
# MBPS MB/s of 100-byte lines for SECONDS, paced in 100 chunks a second, then a marker
# line "FINISHED-MARK", then it sleeps until killed.
# python3 scripts/pty_producer.py MBPS SECONDS
import sys
import time

mbps, seconds = float(sys.argv[1]), float(sys.argv[2])
line = b"x" * 99 + b"\n"
chunk = line * round(mbps * 1e6 / 100 / 100)
t0 = time.time()
n = 0
while time.time() - t0 < seconds:
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    n += 1
    late = t0 + n / 100 - time.time()
    if late > 0:
        time.sleep(late)
sys.stdout.buffer.write(b"FINISHED-MARK\n")
sys.stdout.flush()
time.sleep(600)
