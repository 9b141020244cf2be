"""Small shared helpers (device selection, seeding)."""

from ._device import resolve_device, torch_seed

__all__ = ["resolve_device", "torch_seed"]
