import os

import pytest

# Tests never touch the network: make any accidental hub access fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_collection_modifyitems(items):
    """Mark each parity test in a JUnit report (``--junitxml``: property ``marker`` = ``parity``): CI accepts a
    skip in the main environment only from these, and requires the second environment to run as many (.ci/run)."""
    for item in items:
        if item.get_closest_marker("parity"):
            item.user_properties.append(("marker", "parity"))


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A small demo dataset (40 images, ~160 objects), generated once per test session."""
    from objalign.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, seed=0, n_images=40)
    return root


def original_package(module: str):
    """Import an original implementation's package for a parity test: skip when it is absent, unless
    ``OBJALIGN_REQUIRE_ORIGINALS=1`` (the second CI environment), where its absence fails the test."""
    import importlib
    import os
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources / xFormers notices from the original packages
        if os.environ.get("OBJALIGN_REQUIRE_ORIGINALS") == "1":
            return importlib.import_module(module)
        return pytest.importorskip(module, reason=f"the original package {module!r} is not installed here; "
                                                  "it runs in the parity environment (.ci/run)")
