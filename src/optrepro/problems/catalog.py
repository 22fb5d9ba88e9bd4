"""Every registered problem, one import per family. Each family module only calls `register`."""
from optrepro.problems import catalog_basic  # noqa: F401
from optrepro.problems import catalog_caadam  # noqa: F401
from optrepro.problems import catalog_deepobs  # noqa: F401
from optrepro.problems import catalog_alsals  # noqa: F401
from optrepro.problems import catalog_fuzzy  # noqa: F401
from optrepro.problems import catalog_nos  # noqa: F401
