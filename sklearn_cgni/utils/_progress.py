"""The package's one progress-bar constructor (tqdm), light enough for the command line's start-up."""

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, enabled=True, **kwargs):
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``); ``enabled=False`` draws nothing."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)
