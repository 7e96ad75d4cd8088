"""explore a denoiser in the browser: click any pixel to see its adaptive filter (needs bfcnn[explore])

`bfcnn explore [IMAGE...] [--model M ...]` serves a local page (bfcnn.explore_app, Starlette + uvicorn) on
127.0.0.1 unless --host says otherwise, and prints its address. This module only parses the command line: the
web stack is imported inside command(), so `import bfcnn.cli` never pulls it in.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile

from .errors import BfcnnError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_MEGAPIXELS = 24.0
CACHE_VARIABLES = {"MPLCONFIGDIR": "matplotlib", "TORCHINDUCTOR_CACHE_DIR": "torchinductor"}
INSTALL_HINT = "pip install 'bfcnn[explore]' (Starlette and uvicorn)"


def add_arguments(parser):
    from .denoise import DEFAULT_MODEL

    parser.add_argument("images", nargs="*", metavar="IMAGE", help="images to offer in the page (besides uploads "
                        "and the photos scikit-image ships)")
    parser.add_argument("--model", action="append", default=None, metavar="M",
                        help="a shipped model's name, a .safetensors file or a run folder (default: the shipped "
                        f"{DEFAULT_MODEL}); give it twice to see a second model beside the first")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this "
                        "machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help=f"largest image accepted, in megapixels (default {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the added noise (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def listening_socket(host, port) -> socket.socket:
    """A bound, listening TCP socket (port 0: the system picks a free one), so the printed address is exact."""
    if not 0 <= port <= 65535:
        raise BfcnnError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise BfcnnError(f"--host {host}: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise BfcnnError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(64)
    return sock


def url_of(sock) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def interrupt(signum, frame):
    raise KeyboardInterrupt


def command(args):
    try:
        import uvicorn

        from . import explore_app
    except ImportError as error:
        raise BfcnnError(f"bfcnn explore needs the explore extra ({error.name} is missing): {INSTALL_HINT}") from None
    if not args.max_megapixels > 0:
        raise BfcnnError(f"--max-megapixels must be positive, got {args.max_megapixels}")
    if not 0 <= args.port <= 65535:
        raise BfcnnError(f"--port must be between 0 and 65535, got {args.port}")
    workdir = tempfile.mkdtemp(prefix="bfcnn-explore-")  # the only place the app writes
    # matplotlib's and torch's caches (torch makes torchinductor_<user> in the system's temporary folder on first
    # use) go into it too, unless the user chose their own; restored when the app stops
    caches = {name: os.environ.get(name) for name in CACHE_VARIABLES}
    for name, folder in CACHE_VARIABLES.items():
        os.environ.setdefault(name, os.path.join(workdir, folder))
    try:
        explorer = explore_app.Explorer(args.model or [None], args.images, workdir=workdir,
                                        max_megapixels=args.max_megapixels, seed=args.seed, device=args.device)
        sock = listening_socket(args.host, args.port)
        app = explore_app.create_app(explorer)
        print(f"bfcnn explore: serving at {url_of(sock)}  (models: {', '.join(explorer.model_names())}; "
              "Ctrl-C stops it)", flush=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        # uvicorn shuts down on SIGINT / SIGTERM and then re-raises the signal: make SIGTERM an exception too,
        # so that the folder is removed and the exit is clean either way
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            sock.close()
    finally:
        for name, value in caches.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(workdir, ignore_errors=True)
    print("bfcnn explore: stopped", file=sys.stderr)
