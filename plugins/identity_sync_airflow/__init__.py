"""The Airflow layer of the IDCS → Bitbucket sync: hooks and shared task helpers.

Kept thin on purpose: everything here resolves Airflow connections and hands plain objects to the
Airflow-free ``identity_sync`` package.
"""
