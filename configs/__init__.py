"""Built-in YAML configs, installed as the package ``medt3d.configs``."""
