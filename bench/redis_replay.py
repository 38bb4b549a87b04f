"""Replays the Redis command stream the engine sends for N no-op instances with `redis-cli --pipe`,
to measure how fast Redis alone absorbs it (the ceiling the engine is compared with in
docs/benchmarks.md). The stream, per batch of 1,024 outcomes: one EVALSHA of the recording script
(the notices channel and the notice, which the script publishes once the batch is in, then
each outcome's instance and stored value, the same values a worker sends for a `noop` result); then,
for N within a task's default `inline_results` (100,000), the coordinator's HMGET pages of 65,536
instances (above it the results are kept by reference and not read back).

usage: python3 bench/redis_replay.py N   (Redis on 127.0.0.1:6379; uses keys agency:{replay-*})
"""
import hashlib
import pathlib
import re
import subprocess
import sys
import tempfile
import time

BATCH, PAGE = 1024, 65536
n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
source = pathlib.Path(__file__).resolve().parent.parent / "crates/events/src/redis_scripts.rs"
script = re.search(r'const RECORD_SCRIPT: &str = r#"(.*?)"#;', source.read_text(), re.S).group(1)
sha = hashlib.sha1(script.encode()).hexdigest()
session = f"replay-{int(time.time())}"
outcomes = f"agency:{{{session}}}:outcomes:0:0"
keys = f"agency:{{{session}}}:keys"
run_key = f"agency:{{{session}}}:run"
RUN, TTL, INLINE = "replay/0/1", 7 * 24 * 3600, 100_000


def resp(*args):
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


value = b'{"status":"succeeded","value":null}'
with tempfile.NamedTemporaryFile(delete=False) as out:
    out.write(resp("SCRIPT", "LOAD", script))
    out.write(resp("SET", run_key, RUN))
    for start in range(0, n, BATCH):
        end = min(start + BATCH, n)
        notice = b'{"session":"%s","task":{"group":0,"task":0},"succeeded":[[%d,%d,1]],"failed":[]}' % (session.encode(), start, end)
        args = [f"agency:notices:{{{session}}}", notice, RUN, TTL]
        for instance in range(start, end):
            args += [instance, b"1|S|" + value]
        out.write(resp("EVALSHA", sha, 3, outcomes, keys, run_key, *args))
    for start in range(0, n if n <= INLINE else 0, PAGE):
        out.write(resp("HMGET", outcomes, *range(start, min(start + PAGE, n))))
    out.write(resp("UNLINK", outcomes, keys, run_key))
    path = out.name

started = time.time()
subprocess.run(["redis-cli", "--pipe"], stdin=open(path, "rb"), check=True, stdout=subprocess.DEVNULL)
seconds = time.time() - started
pathlib.Path(path).unlink()
print(f"redis replay of the engine's stream for {n} instances: {seconds:.3f} s, {n / seconds:,.0f} instances/s")
