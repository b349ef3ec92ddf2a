"""Model registry: MLflow underneath (runs, versions, aliases), plus a plain-JSON index
that the serving path reads so it never imports MLflow."""
