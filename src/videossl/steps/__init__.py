"""The five steps (ingest, pretrain, ceiling, probe-eval, register), each one function called alike by the CLI, dvc.yaml, the KFP components and the tests."""
from videossl.config import ConfigError
from videossl.errors import StepError

STEP_ERRORS = (StepError, ConfigError)
