"""Runs the Celery baseline once and prints one JSON object on stdout (everything else goes to stderr).

Creates the tables, starts one `celery worker` (prefork pool of --workers processes), enqueues every document with
apply_async, waits until every job is committed while sampling the worker processes' memory and CPU, stops the
worker, deletes the queue and reports. Started by run.sh, which provides the virtualenv.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


def log(message: str) -> None:
    print(f"[celery-baseline] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--documents", required=True, help="JSONL: {collection, document_id, text} per line")
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    p.add_argument("--database-url", required=True, help="an empty database with pgvector available")
    p.add_argument("--embedding-url", required=True, help="OpenAI-compatible; POST {url}/v1/embeddings")
    p.add_argument("--embedding-model", default="quern-fake-lexical")
    p.add_argument("--embedding-dim", type=int, default=384)
    p.add_argument("--workers", type=int, default=1, help="prefork pool processes")
    p.add_argument("--concurrency", type=int, default=1, help="embedding requests in flight per pool process")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=1000)
    p.add_argument("--chunk-overlap", type=int, default=200)
    p.add_argument("--queue-name", required=True)
    p.add_argument("--queue-type", default="quorum", choices=["quorum", "classic"])
    p.add_argument("--loglevel", default="WARNING", help="the celery worker's log level (the Quern harness uses warn)")
    p.add_argument("--timeout-secs", type=float, default=1800)
    args = p.parse_args()
    if args.workers < 1 or args.concurrency < 1 or args.batch_size < 1:
        p.error("--workers, --concurrency and --batch-size must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------------------------
# /proc sampling of the worker's process tree


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (the prefork pool children), found by parent PID."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the kernel's own peak resident set) of a process, in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def pss_mb(pid: int) -> float:
    """Proportional set size now: shared (copy-on-write) pages split between the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler:
    """Keeps, per PID of the worker tree, the last CPU reading and the highest VmHWM, and the highest summed PSS."""

    def __init__(self, root: int):
        self.root = root
        self.pids: list[int] = process_tree(root)
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.hwm: dict[int, float] = {}
        self.peak_pss_total = 0.0
        self.last_tree_refresh = 0.0
        self.last_pss = 0.0

    def start_cpu(self) -> None:
        self.sample(force=True)
        self.cpu_start = dict(self.cpu_last)

    def sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_tree_refresh >= 1.0:
            self.pids = process_tree(self.root)
            self.last_tree_refresh = now
        for pid in self.pids:
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self.cpu_last[pid] = cpu
                self.cpu_start.setdefault(pid, 0.0 if self.cpu_start else cpu)  # a child born mid-run counts whole
            hwm = peak_rss_mb(pid)
            if hwm is not None:
                self.hwm[pid] = max(self.hwm.get(pid, 0.0), hwm)
        if force or now - self.last_pss >= 1.0:
            self.peak_pss_total = max(self.peak_pss_total, sum(pss_mb(pid) for pid in self.pids))
            self.last_pss = now

    def cpu_delta(self) -> float:
        return sum(self.cpu_last[pid] - self.cpu_start.get(pid, 0.0) for pid in self.cpu_last)


# ---------------------------------------------------------------------------------------------------------------
# Postgres, broker, embedder helpers


def prepare_database(url: str, dim: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS celery_chunks (
                    collection  text    NOT NULL,
                    document_id text    NOT NULL,
                    chunk_index integer NOT NULL,
                    content     text    NOT NULL,
                    embedding   vector({int(dim)}) NOT NULL,
                    PRIMARY KEY (collection, document_id, chunk_index))"""
        )
        # The same HNSW cosine index as quern_chunks (pgvector's defaults m = 16, ef_construction = 64).
        conn.execute(
            "CREATE INDEX IF NOT EXISTS celery_chunks_embedding_hnsw ON celery_chunks"
            " USING hnsw (embedding vector_cosine_ops)"
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS celery_jobs (
                   job_id       text        PRIMARY KEY,
                   collection   text        NOT NULL,
                   document_id  text        NOT NULL,
                   enqueued_at  timestamptz NOT NULL,
                   committed_at timestamptz NOT NULL,
                   chunks       integer     NOT NULL)"""
        )


def embedder_stats(embedding_url: str) -> dict | None:
    """The fake embedder's GET /stats ({"requests", "inputs", ...}); None for an API without it."""
    import requests

    base = embedding_url.rstrip("/")
    for suffix in ("/embeddings", "/v1"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    try:
        response = requests.get(base + "/stats", timeout=5)
        if response.status_code == 200:
            return response.json()
    except requests.RequestException:
        pass
    return None


def exchange_exists(amqp_url: str, name: str) -> bool:
    import amqp.exceptions
    from kombu import Connection

    with Connection(amqp_url) as conn:
        channel = conn.channel()
        try:
            channel.exchange_declare(name, "topic", passive=True)
            return True
        except amqp.exceptions.NotFound:
            return False


def delete_topology(amqp_url: str, queue: str, delayed_delivery: bool) -> None:
    """Deletes the run's queue and exchange, and Celery's native delayed delivery topology if this run made it."""
    from kombu import Connection

    from kombu.transport.native_delayed_delivery import CELERY_DELAYED_DELIVERY_EXCHANGE, MAX_LEVEL, level_name

    queues = [queue] + ([level_name(level) for level in range(MAX_LEVEL + 1)] if delayed_delivery else [])
    exchanges = [queue] + (
        [level_name(level) for level in range(MAX_LEVEL + 1)] + [CELERY_DELAYED_DELIVERY_EXCHANGE]
        if delayed_delivery
        else []
    )
    with Connection(amqp_url) as conn:
        for name in queues:
            try:
                conn.channel().queue_delete(name)
            except Exception as e:  # noqa: BLE001 - best effort, and say so
                log(f"could not delete queue {name}: {e}")
        for name in exchanges:
            try:
                conn.channel().exchange_delete(name)
            except Exception as e:  # noqa: BLE001
                log(f"could not delete exchange {name}: {e}")


def percentile(sorted_values: list[float], q: float) -> float:
    """The same rule as quern-bench: the value at round((n - 1) * q)."""
    if not sorted_values:
        return math.nan
    return sorted_values[round((len(sorted_values) - 1) * q)]


# ---------------------------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    documents = []
    with open(args.documents, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                documents.append((d["collection"], d["document_id"], d["text"]))
    if not documents:
        log("no documents")
        return 2
    log(f"{len(documents)} documents from {args.documents}")

    prepare_database(args.database_url, args.embedding_dim)

    env = dict(os.environ)
    env.update(
        QB_AMQP_URL=args.amqp_url,
        QB_QUEUE=args.queue_name,
        QB_QUEUE_TYPE=args.queue_type,
        QB_DATABASE_URL=args.database_url,
        QB_EMBEDDING_URL=args.embedding_url,
        QB_EMBEDDING_MODEL=args.embedding_model,
        QB_EMBEDDING_DIM=str(args.embedding_dim),
        QB_CONCURRENCY=str(args.concurrency),
        QB_BATCH_SIZE=str(args.batch_size),
        QB_CHUNK_SIZE=str(args.chunk_size),
        QB_CHUNK_OVERLAP=str(args.chunk_overlap),
        PYTHONPATH=str(HERE) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    # celery_app reads its settings at import: set them here before importing it to publish.
    os.environ.update({k: v for k, v in env.items() if k.startswith("QB_")})
    sys.path.insert(0, str(HERE))

    delayed_delivery_existed = args.queue_type != "quorum" or exchange_exists(args.amqp_url, "celery_delayed_delivery")
    workdir = Path(tempfile.mkdtemp(prefix="celery-baseline-"))
    ready_file = workdir / "ready"
    env["QB_READY_FILE"] = str(ready_file)
    celery_bin = Path(sys.executable).parent / "celery"
    command = [
        str(celery_bin), "-A", "celery_app", "worker",
        "--pool", "prefork", "--concurrency", str(args.workers),
        "-Q", args.queue_name, "--prefetch-multiplier", "1",
        "-n", f"{args.queue_name}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", args.loglevel,
    ]  # fmt: skip
    log("starting: " + " ".join(command))
    started = time.monotonic()
    worker = subprocess.Popen(
        command, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr,
        start_new_session=True, preexec_fn=die_with_parent,
    )  # fmt: skip
    # SIGTERM to this runner (SIGINT already raises KeyboardInterrupt) still stops the worker and cleans up below.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))

    result = None
    exit_code = 1
    try:
        while not ready_file.exists():
            if worker.poll() is not None:
                raise RuntimeError(f"the celery worker exited ({worker.returncode}) before it was ready")
            if time.monotonic() - started > 60:
                raise RuntimeError("the celery worker was not ready within 60 s")
            time.sleep(0.05)
        start_to_ready_ms = (time.monotonic() - started) * 1000
        sampler = Sampler(worker.pid)
        log(f"worker ready in {start_to_ready_ms:.0f} ms: processes {sampler.pids}")

        from celery_app import ingest_document

        stats_before = embedder_stats(args.embedding_url)
        sampler.start_cpu()

        enqueue_start = time.time()
        for collection, document_id, text in documents:
            ingest_document.apply_async(args=(collection, document_id, text, time.time()), queue=args.queue_name)
        enqueue_seconds = time.time() - enqueue_start
        log(f"enqueued {len(documents)} tasks in {enqueue_seconds:.3f} s")

        import psycopg

        deadline = time.monotonic() + args.timeout_secs
        last_poll = 0.0
        committed = 0
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            while True:
                sampler.sample()
                now = time.monotonic()
                if now - last_poll >= 0.1:
                    last_poll = now
                    committed = conn.execute("SELECT count(*) FROM celery_jobs").fetchone()[0]
                    if committed >= len(documents):
                        break
                if worker.poll() is not None:
                    raise RuntimeError(f"the celery worker exited ({worker.returncode}) mid-run")
                if now > deadline:
                    raise RuntimeError(f"only {committed} of {len(documents)} jobs committed in {args.timeout_secs} s")
                time.sleep(0.05)
            observed_wall = time.time() - enqueue_start  # as quern-bench measures: until the poll saw every commit
            sampler.sample(force=True)
            cpu = sampler.cpu_delta()
            rows = conn.execute(
                "SELECT extract(epoch FROM enqueued_at)::float8, extract(epoch FROM committed_at)::float8, chunks"
                " FROM celery_jobs"
            ).fetchall()
            stored_chunks = conn.execute("SELECT count(*) FROM celery_chunks").fetchone()[0]
        stats_after = embedder_stats(args.embedding_url)

        chunks = sum(r[2] for r in rows)
        if stored_chunks != chunks:
            raise RuntimeError(f"the jobs report {chunks} chunks but celery_chunks holds {stored_chunks}")
        wall = max(r[1] for r in rows) - enqueue_start
        latencies = sorted((r[1] - r[0]) * 1000 for r in rows)
        if stats_before is not None and stats_after is not None:
            requests_made = stats_after["requests"] - stats_before["requests"]
            inputs = stats_after["inputs"] - stats_before["inputs"]
        else:
            log("the embedding API has no GET /stats: requests counted from the batch size")
            requests_made = sum(math.ceil(r[2] / args.batch_size) for r in rows)
            inputs = chunks
        rss = list(sampler.hwm.values())
        result = {
            "impl": "celery",
            "documents": len(rows),
            "chunks": chunks,
            "wall_seconds": wall,
            "wall_seconds_observed": observed_wall,
            "enqueue_seconds": enqueue_seconds,
            "documents_per_second": len(rows) / wall,
            "chunks_per_second": chunks / wall,
            "latency_ms": {"p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
                           "p99": percentile(latencies, 0.99)},
            "peak_rss_mb_per_worker": max(rss),
            "peak_rss_mb_total": sum(rss),
            "peak_pss_mb_total": sampler.peak_pss_total,
            "processes": len(rss),
            "cpu_seconds": cpu,
            "cpu_seconds_per_1000_chunks": cpu / chunks * 1000 if chunks else math.nan,
            "embedding_requests": requests_made,
            "mean_inputs_per_request": inputs / requests_made if requests_made else 0.0,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "batch_size": args.batch_size,
            "queue_type": args.queue_type,
            "start_to_ready_ms": start_to_ready_ms,
        }  # fmt: skip
        exit_code = 0
    except Exception as e:  # noqa: BLE001 - reported, then cleaned up
        log(f"failed: {e}")
    finally:
        stop_worker(worker)
        try:
            delete_topology(args.amqp_url, args.queue_name, delayed_delivery=not delayed_delivery_existed)
        except Exception as e:  # noqa: BLE001
            log(f"could not clean the broker up: {e}")
        ready_file.unlink(missing_ok=True)
        workdir.rmdir()
    if result is not None:
        print(json.dumps(result), flush=True)
    return exit_code


def die_with_parent() -> None:
    """In the worker before exec: SIGTERM it (a warm shutdown) if this runner dies, even by SIGKILL (Linux prctl)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_worker(worker: subprocess.Popen) -> None:
    """Warm shutdown (SIGTERM: finish the running tasks), then SIGKILL the whole process group after 30 s."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("the worker did not stop within 30 s: killing its process group")
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # its own session (start_new_session): only the worker and its pool
    except ProcessLookupError:
        pass
    worker.wait()


if __name__ == "__main__":
    sys.exit(main())
