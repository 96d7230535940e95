# JupyterLab with dataagent-jupyter (magics, chat widget, side panel), as a non-root user.
#
#   docker build -t dataagent-jupyter .
#   docker run --rm -p 8888:8888 -e JUPYTER_TOKEN=choose-one -e OPENAI_API_KEY \
#       -v "$PWD/notebooks:/home/jovyan/work" -v dataagent-data:/home/jovyan/data \
#       dataagent-jupyter
#
# then open http://localhost:8888/lab?token=choose-one. Without JUPYTER_TOKEN, Jupyter
# makes a random token and prints the URL with it (docker logs). docker-compose.yml runs
# the same image, optionally with Ollama beside it; docs/container.md says what the
# sandbox can do inside a container.

# --- stage 1: the wheel. Building the labextension needs Node.js; the image does not. ---
FROM python:3.11-slim AS wheel
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md install.json ./
COPY dataagent ./dataagent
COPY dataagent_jupyter ./dataagent_jupyter
COPY js ./js
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- stage 2: the image ------------------------------------------------------------------
FROM python:3.11-slim
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JUPYTER_DATA_DIR=/home/jovyan/data \
    JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime

# A plain user: the sandbox then needs no capabilities to give up, and the process limit
# (RLIMIT_NPROC, not enforced for root) applies to generated code.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash jovyan \
    && mkdir -p /home/jovyan/work /home/jovyan/data \
    && chown jovyan:jovyan /home/jovyan/work /home/jovyan/data

COPY --from=wheel /dist/ /tmp/dist/
# The wheel brings JupyterLab and its own labextension: check that Lab sees it enabled.
RUN pip install /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && jupyter labextension list 2>&1 | grep -E "dataagent-jupyter.*enabled.*OK"
COPY docker/ipython_config.py /etc/ipython/ipython_config.py
COPY docker/healthcheck.py /usr/local/bin/dataagent-healthcheck

USER 1000:1000
WORKDIR /home/jovyan/work
# notebooks, and the Jupyter data dir (history and response cache in dataagent/)
VOLUME ["/home/jovyan/work", "/home/jovyan/data"]
EXPOSE 8888

# /api/status needs the token: the check reads it from the server's own runtime file.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/dataagent-healthcheck"]

CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", \
     "--ServerApp.root_dir=/home/jovyan/work"]
