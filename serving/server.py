"""The service on uvicorn: one process, or ``workers`` processes sharing one socket.

Each worker builds its own :class:`Service` (onnxruntime sessions and batchers):
nothing is shared between processes but the listening socket, which the kernel
balances between them. Worker processes are spawned by uvicorn's supervisor and
read their configuration from ``KERAS_VAE_SERVING_CONFIG``.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import ssl
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

from serving.app import build_app
from serving.asgi import AsgiApp, AsgiLimits
from serving.config import ServingConfig
from serving.connection import UNREAD, LimitedHttpToolsProtocol, ServingUvicornConfig
from serving.errors import StartupError
from serving.service import Service

CONFIG_ENV = "KERAS_VAE_SERVING_CONFIG"


def configure_logging(config: ServingConfig) -> None:
    logging.basicConfig(level=config.log_level.upper(), format="%(message)s", stream=sys.stderr)


def build_asgi(config: ServingConfig) -> AsgiApp:
    """Load every model now (errors surface before listening); warm up at lifespan start."""
    service = Service(config)
    app = build_app(service)

    async def startup() -> None:
        await service.start()
        # Everything loaded so far lives as long as the process: move it out of the
        # collector's sight and collect young objects less often (a JSON image is ~800
        # lists). See README, "Why it is fast".
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        # The onnxruntime thread needs the GIL back to hand a batch over while the
        # event loop runs Python; the default interval lets it wait up to 5 ms.
        sys.setswitchinterval(0.0005)

    limits = AsgiLimits(
        config.max_body_bytes, config.max_concurrency, config.max_unread_bytes, UNREAD.bytes
    )
    return AsgiApp(app.handle, app.refuse, limits, startup, service.stop, app.shed)


def worker_app() -> AsgiApp:
    """uvicorn's app factory in a worker process."""
    config = ServingConfig.from_json(os.environ[CONFIG_ENV])
    configure_logging(config)
    return build_asgi(config)


def bind(config: ServingConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as error:
        sock.close()
        message = f"cannot listen on {config.host}:{config.port} ({error.strerror}); use --port"
        raise StartupError(message) from None
    sock.set_inheritable(True)
    return sock


def uvicorn_config(config: ServingConfig, app) -> ServingUvicornConfig:
    tls = {
        "ssl_certfile": config.ssl_certfile or None,
        "ssl_keyfile": config.ssl_keyfile or None,
        "ssl_ca_certs": config.ssl_ca_certs or None,
        # With a CA bundle, clients must present a certificate it signed.
        "ssl_cert_reqs": ssl.CERT_REQUIRED if config.ssl_ca_certs else ssl.CERT_NONE,
    }
    return ServingUvicornConfig(
        app,
        serving=config,
        factory=isinstance(app, str),
        http=LimitedHttpToolsProtocol,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        ws="none",
        lifespan="on",
        interface="asgi3",
        workers=config.workers,
        log_config=None,
        access_log=False,  # the service logs its own JSON line per request
        server_header=False,
        timeout_keep_alive=config.keep_alive_s,
        timeout_graceful_shutdown=config.graceful_timeout_s,
        proxy_headers=config.proxy_headers,
        forwarded_allow_ips=config.forwarded_allow_ips,
        backlog=2048,
        **tls,
    )


def run(config: ServingConfig) -> None:
    """Serve until SIGTERM/SIGINT; requests in flight get ``graceful_timeout_s`` to finish."""
    configure_logging(config)
    sock = bind(config)
    port = sock.getsockname()[1]
    scheme = "https" if config.ssl_certfile else "http"
    if config.workers == 1:
        app = build_asgi(config)
    else:
        Service.check_repository(config)  # one clear error here, not one per worker
        os.environ[CONFIG_ENV] = config.to_json()
        app = "serving.server:worker_app"
    uv_config = uvicorn_config(config, app)
    print(
        f"serving {config.repo} on {scheme}://{config.host}:{port} with {config.workers} "
        f"worker(s) (batching {'on' if config.batching else 'off'}, max batch "
        f"{config.max_batch_size}, max delay {config.max_delay_ms} ms)",
        file=sys.stderr,
        flush=True,
    )
    if config.workers == 1:
        uvicorn.Server(uv_config).run(sockets=[sock])
    else:
        Multiprocess(uv_config, sockets=[sock]).run()
