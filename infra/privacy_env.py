"""Turn off the usage reporting of every library carelake loads, before any of them is imported.

dbt, dlt, ZenML, whylogs and Hugging Face each phone home unless told not to. carelake makes no
outbound connection except to the sources and key services a user configured, so these variables
are set as soon as any carelake package is imported. A user's explicit value is left alone.
"""

import os

_OFF = {
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_ENABLE_REPO_INIT_WARNINGS": "false",
    "WHYLOGS_NO_ANALYTICS": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

for _name, _value in _OFF.items():
    os.environ.setdefault(_name, _value)
