"""Plain PyTorch modules and losses (no scikit-learn in here).

Each module adds its own import line below.
"""
