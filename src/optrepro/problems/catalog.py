"""Every registered problem, one import per family. Each family module only calls `register`."""
from optrepro.problems import catalog_basic  # noqa: F401
