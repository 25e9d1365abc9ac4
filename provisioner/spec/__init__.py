"""Loading a playbook: YAML with line marks → templated → validated resources."""
