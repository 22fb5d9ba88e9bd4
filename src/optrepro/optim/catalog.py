"""Every registered optimizer, one import per family. Each family module only calls `register`."""
from optrepro.optim import catalog_baselines  # noqa: F401
from optrepro.optim import catalog_crowded_valley  # noqa: F401
from optrepro.optim import catalog_keras  # noqa: F401
from optrepro.optim import catalog_papers  # noqa: F401
