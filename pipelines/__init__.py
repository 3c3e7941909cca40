"""The KFP pipeline DAG and its compile / local-run entry points."""
