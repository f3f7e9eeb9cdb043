"""The "Identity sync" page in the Airflow UI: a small server-rendered FastAPI app over the audit
store, mounted by ``plugins/identity_sync_plugin.py`` and protected by Airflow's auth manager.

Modules here use absolute imports only: Airflow's plugin loader also executes every ``.py`` file
under ``plugins/`` on its own, outside its package.
"""
