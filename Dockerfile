# The batch-ai image: Airflow's official image with the project's runtime requirements, installed
# once at build time through the same constraints the tests use (never at container start).
#
#   docker compose build            (docker-compose.yaml builds both targets)
#
# Target `airflow` runs every Airflow service; target `emulator` adds the local provider
# emulator's storage servers and runs the emulator (for trying the project offline).
FROM apache/airflow:3.3.2-python3.11 AS airflow

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/batch-ai/
RUN pip install --no-cache-dir -r /opt/batch-ai/requirements.txt

COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 include /opt/batch-ai/include
ENV PYTHONPATH=/opt/airflow/plugins:/opt/batch-ai/include \
    BATCH_AI_DATA_DIR=/opt/batch-ai/data

FROM airflow AS emulator

COPY --chown=airflow:0 requirements-emulator.txt /opt/batch-ai/
RUN pip install --no-cache-dir -r /opt/batch-ai/requirements-emulator.txt
EXPOSE 8099 8098 8097
CMD ["python", "-m", "provider_emulator", "--host", "0.0.0.0", "--public-host", "emulator", \
     "--port", "8099", "--gcs-port", "8098", "--s3-port", "8097"]
