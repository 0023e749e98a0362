-- The ledger gets its own database beside Airflow's metadata database.
CREATE DATABASE batch_ai;
