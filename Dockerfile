# The Airflow image the compose stack runs: the official Apache Airflow 3.3.2 image (slim variant:
# Airflow core only, no bundle of providers) plus this project's locked dependencies and code.
#
#   docker compose build            (or: docker build -t idcs-bitbucket-sync-airflow .)
#
# Dependencies come from uv.lock, not from a fresh resolution: a first stage exports the lock's
# runtime packages (no dev group) to a requirements file with hashes, and the final stage installs
# exactly that with pip in hash-checking mode and --no-deps, so nothing outside the lock is pulled.
# Upgrading Airflow = bump AIRFLOW_VERSION here, apache-airflow in pyproject.toml, re-lock.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
ARG AIRFLOW_BASE_IMAGE=apache/airflow:slim-${AIRFLOW_VERSION}-python${PYTHON_VERSION}

FROM ${AIRFLOW_BASE_IMAGE} AS lock-export
# The same uv release the Makefile pins.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /tmp/project
COPY --chown=airflow:0 pyproject.toml uv.lock ./
RUN python -m uv export --frozen --no-dev --no-emit-project --format requirements-txt \
        --output-file /tmp/requirements.lock.txt

FROM ${AIRFLOW_BASE_IMAGE}
ARG AIRFLOW_VERSION
COPY --from=lock-export /tmp/requirements.lock.txt /opt/airflow/requirements.lock.txt
RUN pip install --no-cache-dir --no-deps --require-hashes -r /opt/airflow/requirements.lock.txt \
    && python -c "import airflow, sys; v = airflow.__version__; sys.exit(0 if v == '${AIRFLOW_VERSION}' else f'uv.lock has Airflow {v}, the image is ${AIRFLOW_VERSION}')"

# The project itself (console scripts idsync-emulators and idsync-audit); its dependencies are
# already installed from the lock.
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow/project/
COPY --chown=airflow:0 include /opt/airflow/project/include
COPY --chown=airflow:0 plugins /opt/airflow/project/plugins
RUN pip install --no-cache-dir --no-deps /opt/airflow/project

# Baked in the way the official image expects them, so the image runs without the bind mounts;
# docker-compose.yaml mounts dags/, plugins/ and include/ over these for development.
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 deploy /opt/airflow/deploy
ENV PYTHONPATH=/opt/airflow/include:/opt/airflow/plugins \
    IDSYNC_RULES_FILE=/opt/airflow/include/sync_rules.yaml
