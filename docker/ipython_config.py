# IPython settings of the container image (/etc/ipython/ipython_config.py): the Data
# Agent's model can be chosen from the environment, so docker-compose.yml can pick one
# (e.g. an Ollama model) without editing a notebook. Everything else: %config DataAgent.
import os

c = get_config()  # noqa: F821 - provided by IPython when it reads this file

if os.environ.get("DATAAGENT_MODEL"):
    c.DataAgent.model = os.environ["DATAAGENT_MODEL"]
