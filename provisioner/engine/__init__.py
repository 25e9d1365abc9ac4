"""The impure edge: reading hosts, applying changes, checking convergence."""
