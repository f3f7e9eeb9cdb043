"""IDCS → Bitbucket Data Center sync: the domain logic, free of Airflow.

Stages (one sub-package each): ``idcs`` (extract), ``quality`` (data-quality gate), ``mapping``
(rules → desired state), ``bitbucket`` (client and current state), ``planning`` (diff → plan),
``loading`` (apply), ``audit`` (SQL store) and ``emulators`` (IDCS and Bitbucket stand-ins).
``pipeline`` strings them together for the DAG, the demo, the tests and the benchmarks.
"""

__version__ = "0.1.0"
