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
