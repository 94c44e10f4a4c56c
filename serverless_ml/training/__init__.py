"""Training: the model pipeline, the Optuna search, evaluation and the promotion rule.

Everything here is pure (frames and arrays in, objects and numbers out) except
:mod:`.search`, which runs an Optuna study on a storage URL. MLflow logging lives in
:mod:`serverless_ml.tracking`; the job that ties them together is
:mod:`serverless_ml.pipelines.train`.
"""
