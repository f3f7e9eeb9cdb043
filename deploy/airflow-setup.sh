#!/usr/bin/env bash
# The project's part of airflow-init, after the metadata DB is migrated: the pool the apply tasks
# use (tasks in a pool that does not exist are never scheduled), the three connections from .env,
# and the audit database's schema. tests/deploy/test_compose.py runs this script as it is.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

airflow pools set "${BITBUCKET_POOL}" "${BITBUCKET_POOL_SLOTS}" "Bitbucket admin API calls of the identity sync"

connections_file="$(mktemp --suffix .json)"
trap 'rm -f "${connections_file}"' EXIT
python "${here}/connections.py" "${connections_file}"
if [[ "$(cat "${connections_file}")" != "{}" ]]; then
  airflow connections import --overwrite "${connections_file}"
fi

# Opening the store migrates it too; doing it here makes a wrong audit DB setting fail the init.
idsync-audit migrate
echo "identity sync setup done: pool ${BITBUCKET_POOL}, connections, audit schema"
