"""ZenML steps of the imaging pipeline. Import only after ``zenml_env.use_local_zenml``."""
