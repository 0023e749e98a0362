#!/usr/bin/env bash
# Builds benchmarks/commonai/.venv: a separate Python 3.11 environment holding the Apache Airflow
# common.ai provider, so measure.py can time its LLMBatchOperator's result handling. It never
# touches the project's own .venv.
#
#   bash benchmarks/commonai/setup.sh          # build (or reuse) the venv
#   FORCE=1 bash benchmarks/commonai/setup.sh  # rebuild from scratch
#
# The provider requires apache-airflow itself (plus common-compat, standard, pydantic-ai-slim,
# structlog); Airflow is pinned to the project's version and resolved through the project's
# constraints.txt, so everything Airflow pulls in is the same set the project tests with.
# No extras: the OpenAI adapter imports the openai SDK only to build a network client, which
# measure.py replaces with a local-file reader.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3.11}"

COMMON_AI_VERSION="1.0.0"   # apache-airflow-providers-common-ai, newest on PyPI when this was written
AIRFLOW_VERSION="3.3.2"     # the same as requirements.txt

if [[ "${FORCE:-0}" == "1" ]]; then
    rm -rf "$VENV"
fi

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - <<EOF 2>/dev/null
import importlib.metadata as m, sys
sys.exit(m.version("apache-airflow-providers-common-ai") != "$COMMON_AI_VERSION")
EOF
then
    echo "common.ai venv already at $VENV (apache-airflow-providers-common-ai==$COMMON_AI_VERSION)"
    exit 0
fi

start=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
# The project's constraints pin Airflow's whole tree; the five packages the provider adds on top
# of it (pydantic-ai-slim and what it pulls in) are pinned here, as resolved on 2026-11.
# (grep drops this machine's pip warnings about absent local index folders.)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$ROOT/constraints.txt" \
    "apache-airflow==$AIRFLOW_VERSION" \
    "apache-airflow-providers-common-ai==$COMMON_AI_VERSION" \
    "pydantic-ai-slim==2.68.0" "pydantic-graph==2.68.0" "genai-prices==0.2.3" \
    "griffelib==2.4.1" "logfire-api==5.6.0" \
    2>&1 | { grep -v "is neither a file nor a directory" || true; }
end=$(date +%s)

# Importing Airflow writes a config under AIRFLOW_HOME: point it at a throwaway folder.
check_home="$(mktemp -d)"
AIRFLOW_HOME="$check_home" "$VENV/bin/python" -c \
    "import airflow.providers.common.ai.batch.results, airflow.providers.common.ai.operators.llm_batch"
rm -rf "$check_home"
echo "common.ai venv ready at $VENV in $((end - start)) s ($(du -sh "$VENV" | cut -f1))"
