"""Test support shipped with the package: models and inputs with known numerical traits."""
