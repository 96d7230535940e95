"""Container health check: is the Jupyter server answering ``/api/status``?

``/api/status`` needs the server's token, which may be random (no ``JUPYTER_TOKEN``
given), so the check reads it from the server's own runtime file
(``$JUPYTER_RUNTIME_DIR/jpserver-PID.json``) instead of taking it from the environment.
Exit status 0 when healthy, 1 otherwise (Docker's HEALTHCHECK contract). Standard library
only.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import urllib.request


def check(runtime_dir: str, timeout: float = 4.0) -> str:
    """The server's status line; raises OSError/ValueError when it is not healthy."""
    servers = sorted(glob.glob(os.path.join(runtime_dir, "jpserver-*.json")))
    if not servers:
        raise OSError(f"no Jupyter server has written its runtime file in {runtime_dir}")
    with open(servers[-1], encoding="utf-8") as fh:
        info = json.load(fh)
    url = f"http://127.0.0.1:{int(info['port'])}{info.get('base_url', '/')}api/status"
    request = urllib.request.Request(url, headers={"Authorization": f"token {info['token']}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = json.load(response)
    return f"ok: started {status.get('started')}, {status.get('kernels', 0)} kernel(s)"


def main() -> int:
    runtime_dir = os.environ.get("JUPYTER_RUNTIME_DIR", "/tmp/jupyter-runtime")
    try:
        print(check(runtime_dir))
    except (OSError, ValueError, KeyError) as exc:
        print(f"unhealthy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
