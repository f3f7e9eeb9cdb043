#!/usr/bin/env bash
# airflow-init (runs as root, once per `docker compose up`): the official compose file's checks and
# folder ownership, the admin's password for the SimpleAuthManager, then, as the image's entrypoint
# with _AIRFLOW_DB_MIGRATE=true, the metadata DB migration followed by deploy/airflow-setup.sh
# (pool, connections, audit schema). Every other Airflow service waits for this to succeed.
set -euo pipefail

AIRFLOW_UID="${AIRFLOW_UID:-50000}"

# Resources: the same thresholds as the official file (warnings, not errors).
one_meg=1048576
mem_available=$(($(getconf _PHYS_PAGES) * $(getconf PAGE_SIZE) / one_meg))
cpus_available=$(grep -cE 'cpu[0-9]+' /proc/stat)
disk_available=$(df / | tail -1 | awk '{print $4}')
warning_resources="false"
if (( mem_available < 4000 )); then
  echo "WARNING: not enough memory for Airflow: at least 4 GB needed, ${mem_available} MB available"
  warning_resources="true"
fi
if (( cpus_available < 2 )); then
  echo "WARNING: not enough CPUs for Airflow: at least 2 needed, ${cpus_available} available"
  warning_resources="true"
fi
if (( disk_available < one_meg * 10 )); then
  echo "WARNING: not enough disk for Airflow: at least 10 GB needed, $((disk_available / one_meg)) GB available"
  warning_resources="true"
fi
if [[ ${warning_resources} == "true" ]]; then
  echo "See the README's Deploying section (sizing)."
fi

mkdir -p /opt/airflow/logs /opt/airflow/dags /opt/airflow/plugins /opt/airflow/config

# SimpleAuthManager reads passwords from this file; write the admin's from .env (never generated,
# so the password is the one you chose and is never printed to the logs).
python - "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}" <<'PY'
import json, os, sys
with open(sys.argv[1], "w") as file:
    json.dump({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, file)
PY
chmod 600 "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
chown -R "${AIRFLOW_UID}:0" /opt/airflow/logs /opt/airflow/dags /opt/airflow/plugins /opt/airflow/config

export _AIRFLOW_DB_MIGRATE=true
/entrypoint bash /opt/airflow/deploy/airflow-setup.sh
chown -R "${AIRFLOW_UID}:0" /opt/airflow/logs
