"""One dynamic partition per release: `<workflow>--<version>`."""

import dagster as dg

# The partitions' name, for the instance's dynamic-partition calls (the definition's `.name` is
# Optional for type checkers).
RELEASES_PARTITIONS = "releases"
releases_partitions = dg.DynamicPartitionsDefinition(name=RELEASES_PARTITIONS)

# Run tags that steer an eval run; tags (not run config) so backfills can carry them too.
SUITE_VERSION_TAG = "relops/suite_version"
SAMPLES_TAG = "relops/samples"
IMPORT_FILE_TAG = "relops/import_file"
IMPORT_FORMAT_TAG = "relops/import_format"
IMPORT_VARIANT_TAG = "relops/import_variant"
REGISTERED_BY_TAG = "relops/registered_by"


def release_check_spec(name: str, asset: str, description: str, *, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check evaluated per release partition: each release keeps its own result, so the UI
    shows which release passed or failed (not only the latest run's). Dagster marks partitioned
    checks as preview; that warning is expected here and only here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking,
                                 partitions_def=releases_partitions)
