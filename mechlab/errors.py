"""The project's exceptions. Each message names the bad value and says how to fix it; the CLI prints
the message on one line and exits with status 2."""


class MechlabError(Exception):
    """Base class for every error mechlab raises on purpose."""


class ModelSpecError(MechlabError, ValueError):
    """A model spec that is not one of the accepted forms."""


class ModelUnavailableError(MechlabError, RuntimeError):
    """A model that exists but cannot be loaded here (no cache, no network, corrupt download)."""


class CacheError(ModelUnavailableError):
    """The cache cannot be written: read-only, out of space, or otherwise unusable."""


class InputError(MechlabError, ValueError):
    """Bad user input: a prompt, token ids, a layer or head index, an output path."""


class ResourceError(MechlabError, MemoryError):
    """A request that would need more memory than this machine has: refused before it starts."""


class DataError(MechlabError, RuntimeError):
    """Data mechlab needs that is missing, corrupt or belongs to something else: a corpus that
    fails its hash check, a saved lens for another model."""


class MechlabWarning(UserWarning):
    """A result that needs a caveat (a view that had to drop positions, a check that fell short):
    the CLI shows these on one line and keeps every other library's warnings off stderr."""
