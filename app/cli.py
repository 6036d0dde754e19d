"""The `mingpian` command line (CONTRACTS §8)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

Command = Callable[[argparse.Namespace, Settings], int]


def serving_app() -> FastAPI:
    """The app as `mingpian serve` runs it, from the environment's settings (the factory
    each process imports when serve runs several)."""
    from app.catalog_wiring import tune_for_serving
    from app.main import create_app

    settings = get_settings()
    configure_logging(settings)  # a fresh process: the root logger as `mingpian` sets it
    return tune_for_serving(create_app(settings, consumer_children=True))


def configure_logging(settings: Settings) -> None:
    """Set up this process's logging: MINGPIAN_LOG_LEVEL, MINGPIAN_LOG_FORMAT (text|json)."""
    from app.logging_filter import configure_logging as configure_root

    configure_root(level=settings.log_level, fmt=settings.log_format)
    for noisy in ("faiss.loader", "httpx", "jieba"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))


def _uvicorn_logging(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's logging arguments: its own text set-up, or (json) none, so that its
    loggers reach the root's JSON handler."""
    from uvicorn.config import LOGGING_CONFIG

    return {"log_level": settings.log_level.lower(),
            "log_config": None if settings.log_format == "json" else LOGGING_CONFIG}


def _refuse_to_start(settings: Settings) -> bool:
    """Print why these settings must not serve (to stderr) and return True, if they must not."""
    from app.secrets_check import startup_problems

    problems = startup_problems(settings)
    for line in problems:
        print(f"mingpian: refusing to start: {line}", file=sys.stderr)
    if problems:
        print("mingpian: (MINGPIAN_DEMO=true allows the weak secrets, for a demo only)",
              file=sys.stderr)
    return bool(problems)


def _consumer_as_process(settings: Settings) -> bool:
    return settings.embedded_worker and not settings.redis_url and \
        settings.embedded_worker_process


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if _refuse_to_start(settings):
        return 2
    import uvicorn

    from app.metrics import MULTIPROC_ENV, multiprocess_dir, use_multiprocess_dir

    consumer = None
    if args.workers > 1 or _consumer_as_process(settings):
        # Several processes (serve's, its consumer's): one metrics directory, fresh each
        # start, lets /metrics sum them all (app/metrics.py).
        use_multiprocess_dir(Path(os.environ.get(MULTIPROC_ENV) or
                                  multiprocess_dir(settings.data_dir)), clean=True)
    if _consumer_as_process(settings):
        from app.worker import ConsumerProcess

        # The embedded consumer is a child `mingpian worker` (issue 17); the serving
        # processes consume nothing themselves.
        os.environ["MINGPIAN_EMBEDDED_WORKER"] = "false"
        settings = settings.model_copy(update={"embedded_worker": False})
        consumer = ConsumerProcess().start()
    try:
        if args.workers > 1:
            # Several processes on one listening socket: each builds its own app from the
            # same environment; the store (SQLite file or Redis) is what they share, and they
            # share the persisted index's pages (MINGPIAN_INDEX_MMAP, on by default).
            uvicorn.run("app.cli:serving_app", factory=True, workers=args.workers,
                        host=args.host, port=args.port, access_log=False,
                        **_uvicorn_logging(settings))
            return 0
        from app.catalog_wiring import tune_for_serving
        from app.main import create_app

        uvicorn.run(tune_for_serving(create_app(settings, consumer_children=True)),
                    host=args.host, port=args.port,
                    access_log=False, **_uvicorn_logging(settings))
        return 0
    finally:
        if consumer is not None:
            consumer.stop()


def _worker(_args: argparse.Namespace, settings: Settings) -> int:  # the Command signature
    from app.worker import exit_with_parent

    exit_with_parent()  # started by embedded serve: never outlive it
    if _refuse_to_start(settings):
        return 2
    from app.metrics import MULTIPROC_ENV, Metrics, multiprocess_dir, use_multiprocess_dir

    # Next to a `serve --workers N` on this machine (same data directory, or the same
    # PROMETHEUS_MULTIPROC_DIR), the worker's counters join that serve's /metrics.
    shared = Path(os.environ.get(MULTIPROC_ENV) or multiprocess_dir(settings.data_dir))
    if os.environ.get(MULTIPROC_ENV) or shared.is_dir():
        use_multiprocess_dir(shared, clean=False)
    metrics = Metrics()
    from app.services import build_services
    from app.worker import run_worker

    embedder = None
    if settings.worker_embedder_processes > 0 and not settings.embedder.startswith("hash"):
        from threadpoolctl import threadpool_limits

        from app.worker import PARENT_ENV
        from nlp.embed import load_embedder

        # Started by embedded serve: its model yields the CPU to serve's page views and
        # acknowledgements (the worker's own threads do not: they take the SQLite writer,
        # which an acknowledgement may be waiting for).
        embedder = load_embedder(settings.embedder, threads=settings.embedder_threads or 1,
                                 child_processes=settings.worker_embedder_processes,
                                 child_nice=settings.embedded_worker_nice
                                 if os.environ.get(PARENT_ENV) else 0)
        # What numpy is left here is small: one BLAS thread, or idle OpenBLAS threads spin
        # on the cores the model needs (a worker then ran at 1.2 cores, measured).
        threadpool_limits(limits=1, user_api="blas")
    services = build_services(settings, embedder=embedder)
    from app.signals import stop_on_signals

    stop = threading.Event()
    stop_on_signals(stop)
    try:
        stats = run_worker(services, stop=stop, metrics=metrics)
    finally:
        services.close()
        if embedder is not None:
            embedder.close()
    print(f"worker stopped: {stats.processed} processed, {stats.dead} dead-lettered")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every verb."""
    p = argparse.ArgumentParser(
        prog="mingpian",
        description="mingpian 名片 — WeChat/WeCom group chat to interest profiles, "
        "recommendations, smart cards and a compliant referral ledger. "
        "Settings come from MINGPIAN_* variables or .env.",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = sub.add_parser("serve", help="run the HTTP service (embedded mode also runs the "
                       "queue consumer in-process)",
                       description="Run the HTTP service. With embedded SQLite (no "
                       "MINGPIAN_REDIS_URL) it also consumes the queue, so one command is a "
                       "complete service. It never loads demo data by itself.")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (8000)")
    s.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port (1); each runs the whole service")
    s.set_defaults(fn=_serve)

    w = sub.add_parser("worker", help="consume the durable queue (any number may run "
                       "against one Redis)",
                       description="Consume the inbox queue: tag messages, update profiles, "
                       "reply in groups. Stops cleanly on SIGTERM/SIGINT; a SIGKILL loses "
                       "nothing (claimed items come back after the visibility timeout).")
    w.set_defaults(fn=_worker)

    from app.commands import aibot, archive, bot, cards, catalog, console, demo, tags

    for module in (bot, aibot, archive, catalog, cards, console, demo, tags):
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; return the exit status."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings)
    fn: Command = args.fn
    return fn(args, settings)


if __name__ == "__main__":
    sys.exit(main())
